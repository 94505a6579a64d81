"""A stand-in for `sdgraph serve` that speaks the same routes with fake nodes: the editor's tests can run
without the engine's diffusion nodes or a model (SDGRAPH_BROWSER_SERVER=stub). It validates like the real server
(required inputs, ranges, link types) and "runs" a prompt by sending the real event sequence and writing a PNG
that carries the workflow in its text chunks."""
from __future__ import annotations

import asyncio
import io
import json
import sys
import uuid
from pathlib import Path

from aiohttp import web
from PIL import Image, PngImagePlugin

WEB = Path(__file__).resolve().parents[2] / "web"

INT = lambda d, lo, hi, step=1, **kw: ["INT", {"default": d, "min": lo, "max": hi, "step": step, **kw}]  # noqa: E731
FLOAT = lambda d, lo, hi, step: ["FLOAT", {"default": d, "min": lo, "max": hi, "step": step}]  # noqa: E731


def node(name, display, category, required, output=(), names=None, optional=None, hidden=None, output_node=False):
    info = {"input": {"required": required}, "input_order": {"required": list(required)},
            "output": list(output), "output_is_list": [False] * len(output), "output_name": list(names or output),
            "name": name, "display_name": display, "description": display, "category": category,
            "output_node": output_node, "python_module": "stub"}
    if optional:
        info["input"]["optional"] = optional
        info["input_order"]["optional"] = list(optional)
    if hidden:
        info["input"]["hidden"] = hidden
    return info


def object_info(input_dir: Path) -> dict:
    images = sorted(p.name for p in input_dir.iterdir() if p.is_file())
    models = input_dir.parent / "models" / "checkpoints"
    checkpoints = sorted(p.name for p in models.iterdir()) if models.is_dir() else []
    nodes = [
        node("CheckpointLoaderSimple", "Load Checkpoint", "loaders", {"ckpt_name": [["sdgraph-tiny", *checkpoints], {}]},
             ["MODEL", "CLIP", "VAE"]),
        node("CLIPTextEncode", "CLIP Text Encode (Prompt)", "conditioning",
             {"text": ["STRING", {"multiline": True}], "clip": ["CLIP", {}]}, ["CONDITIONING"]),
        node("EmptyLatentImage", "Empty Latent Image", "latent",
             {"width": INT(512, 16, 8192, 8), "height": INT(512, 16, 8192, 8), "batch_size": INT(1, 1, 64)}, ["LATENT"]),
        node("KSampler", "KSampler", "sampling", {
            "model": ["MODEL", {}], "seed": INT(0, 0, 2**64 - 1, control_after_generate=True), "steps": INT(20, 1, 10000),
            "cfg": FLOAT(8.0, 0.0, 100.0, 0.1), "sampler_name": [["euler", "ddim"], {}],
            "scheduler": [["normal", "karras"], {}], "positive": ["CONDITIONING", {}], "negative": ["CONDITIONING", {}],
            "latent_image": ["LATENT", {}], "denoise": FLOAT(1.0, 0.0, 1.0, 0.01)}, ["LATENT"]),
        node("VAEDecode", "VAE Decode", "latent", {"samples": ["LATENT", {}], "vae": ["VAE", {}]}, ["IMAGE"]),
        node("SaveImage", "Save Image", "image", {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "sdgraph"}]},
             hidden={"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}, output_node=True),
        node("PreviewImage", "Preview Image", "image", {"images": ["IMAGE", {}]}, output_node=True),
        node("LoadImage", "Load Image", "image", {"image": [images or ["none.png"], {"image_upload": True}]},
             ["IMAGE", "MASK"]),
        node("ImageInvert", "Invert Image", "image", {"image": ["IMAGE", {}], "enabled": ["BOOLEAN", {"default": True}]},
             ["IMAGE"]),
    ]
    return {n["name"]: n for n in nodes}


def validate(prompt: dict, info: dict) -> dict:
    errors: dict = {}

    def err(node_id, type_, message, details="", **extra):
        entry = errors.setdefault(node_id, {"errors": [], "class_type": prompt[node_id].get("class_type"),
                                            "dependent_outputs": []})
        entry["errors"].append({"type": type_, "message": message, "details": details, "extra_info": extra})

    for node_id, entry in prompt.items():
        spec = info.get(entry.get("class_type"))
        if spec is None:
            err(node_id, "invalid_prompt", f"Node type not found: {entry.get('class_type')}")
            continue
        inputs = entry.get("inputs", {})
        for name, (head, *rest) in spec["input"]["required"].items():
            opts = rest[0] if rest else {}
            if name not in inputs:
                err(node_id, "required_input_missing", "Required input is missing", name, input_name=name)
                continue
            value = inputs[name]
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                source = prompt.get(value[0])
                out = info.get(source["class_type"], {}).get("output", []) if source else []
                got = out[value[1]] if value[1] < len(out) else None
                if got != head:
                    err(node_id, "return_type_mismatch", "Return type mismatch between linked nodes",
                        f"{name}, received_type({got}) mismatch input_type({head})", input_name=name)
            elif head in ("INT", "FLOAT"):
                if "min" in opts and value < opts["min"]:
                    err(node_id, "value_smaller_than_min", f"Value {value} smaller than min of {opts['min']}",
                        name, input_name=name, received_value=value)
                if "max" in opts and value > opts["max"]:
                    err(node_id, "value_bigger_than_max", f"Value {value} bigger than max of {opts['max']}",
                        name, input_name=name, received_value=value)
            elif isinstance(head, list) and value not in head:
                err(node_id, "value_not_in_list", "Value not in list", f"{name}: '{value}' not in list",
                    input_name=name, received_value=value)
    return errors


class Stub:
    def __init__(self, base: Path):
        self.output, self.input = base / "output", base / "input"
        self.output.mkdir(parents=True, exist_ok=True)
        self.input.mkdir(parents=True, exist_ok=True)
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.history: dict = {}
        self.number = 0
        self.running = None
        self.seen: set[str] = set()

    async def send(self, client_id, type_, data):
        ws = self.sockets.get(client_id)
        if ws is not None and not ws.closed:
            await ws.send_json({"type": type_, "data": data})

    async def run(self, prompt_id, prompt, client_id, extra):
        entry = [self.number, prompt_id, prompt, {"client_id": client_id, **extra}, []]
        self.running = entry
        await self.send(client_id, "execution_start", {"prompt_id": prompt_id})
        keys = {node_id: json.dumps(entry, sort_keys=True) for node_id, entry in prompt.items()}
        cached = [n for n, key in keys.items() if key in self.seen and prompt[n]["class_type"] != "SaveImage"]
        self.seen.update(keys.values())
        await self.send(client_id, "execution_cached", {"nodes": cached, "prompt_id": prompt_id})
        outputs = {}
        for node_id, node_entry in prompt.items():
            if node_id in cached:
                continue
            await self.send(client_id, "executing", {"node": node_id, "prompt_id": prompt_id})
            if node_entry["class_type"] == "CheckpointLoaderSimple":
                name = node_entry["inputs"]["ckpt_name"]
                if name != "sdgraph-tiny":
                    exc = ValueError(f"{name} is not a checkpoint")
                    await self.send(client_id, "execution_error", {
                        "prompt_id": prompt_id, "node_id": node_id, "node_type": "CheckpointLoaderSimple",
                        "exception_message": str(exc), "exception_type": type(exc).__name__, "traceback": []})
                    self.history[prompt_id] = {"prompt": entry, "outputs": {},
                                               "status": {"status_str": "error", "completed": False, "messages": []}}
                    self.running = None
                    return
            if node_entry["class_type"] == "KSampler":
                steps = min(int(node_entry["inputs"].get("steps", 5)), 10)
                for step in range(1, steps + 1):
                    await asyncio.sleep(0.05)
                    buf = io.BytesIO()
                    Image.new("RGB", (8, 8), (step * 20, 80, 160)).save(buf, "JPEG")
                    ws = self.sockets.get(client_id)
                    if ws is not None and not ws.closed:
                        await ws.send_bytes((1).to_bytes(4, "big") + (1).to_bytes(4, "big") + buf.getvalue())
                    await self.send(client_id, "progress", {"value": step, "max": steps, "node": node_id,
                                                            "prompt_id": prompt_id})
            if node_entry["class_type"] in ("SaveImage", "PreviewImage"):
                meta = PngImagePlugin.PngInfo()
                meta.add_text("prompt", json.dumps(prompt))
                meta.add_text("workflow", json.dumps(extra.get("extra_pnginfo", {}).get("workflow")))
                name = f"sdgraph_{self.number:05}_.png"
                Image.new("RGB", (64, 64), (200, 60, 60)).save(self.output / name, pnginfo=meta)
                images = [{"filename": name, "subfolder": "", "type": "output"}]
                outputs[node_id] = {"images": images}
                await self.send(client_id, "executed", {"node": node_id, "output": {"images": images},
                                                        "prompt_id": prompt_id})
        await self.send(client_id, "executing", {"node": None, "prompt_id": prompt_id})
        await self.send(client_id, "execution_success", {"prompt_id": prompt_id})
        self.history[prompt_id] = {"prompt": entry, "outputs": outputs,
                                   "status": {"status_str": "success", "completed": True, "messages": []}}
        self.running = None

    async def post_prompt(self, request):
        body = await request.json()
        prompt = body.get("prompt") or {}
        errors = validate(prompt, object_info(self.input))
        if errors:
            return web.json_response({"error": {"type": "prompt_outputs_failed_validation",
                                                "message": "Prompt outputs failed validation", "details": "",
                                                "extra_info": {}}, "node_errors": errors}, status=400)
        self.number += 1
        prompt_id = str(uuid.uuid4())
        asyncio.get_running_loop().create_task(
            self.run(prompt_id, prompt, body.get("client_id"), body.get("extra_data", {})))
        return web.json_response({"prompt_id": prompt_id, "number": self.number, "node_errors": {}})

    async def convert(self, request):
        """The engine's own UI-format converter (pure Python), as `sdgraph serve` answers /workflow/convert."""
        from sdgraph.uiformat import ConversionError, ui_graph, ui_to_api
        graph = ui_graph(await request.json())
        if graph is None:
            return web.json_response({"error": {"type": "invalid_request", "message": "not a UI workflow"}}, status=400)
        try:
            return web.json_response({"prompt": ui_to_api(graph)})
        except ConversionError as exc:
            return web.json_response({"error": {"type": "invalid_prompt", "message": str(exc)},
                                      "problems": exc.problems}, status=400)

    async def to_ui(self, request):
        from sdgraph.uiformat import api_to_ui
        body = await request.json()
        return web.json_response({"workflow": api_to_ui(body["prompt"], None, body.get("positions"))})

    async def websocket(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        self.sockets[client_id] = ws
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client_id}})
        async for _ in ws:
            pass
        return ws

    async def upload(self, request):
        form = await request.post()
        field = form["image"]
        (self.input / field.filename).write_bytes(field.file.read())
        return web.json_response({"name": field.filename, "subfolder": "", "type": "input"})

    def app(self) -> web.Application:
        app = web.Application()
        folders = {"output": self.output, "input": self.input}
        app.router.add_get("/", lambda r: web.FileResponse(WEB / "index.html"))
        app.router.add_get("/object_info", lambda r: web.json_response(object_info(self.input)))
        app.router.add_post("/prompt", self.post_prompt)
        app.router.add_post("/workflow/convert", self.convert)
        app.router.add_post("/workflow/ui", self.to_ui)
        app.router.add_get("/queue", lambda r: web.json_response(
            {"queue_running": [self.running] if self.running else [], "queue_pending": []}))
        app.router.add_post("/queue", lambda r: web.json_response({}))
        app.router.add_get("/history", lambda r: web.json_response(self.history))
        app.router.add_post("/history", lambda r: web.json_response({}))
        app.router.add_post("/interrupt", lambda r: web.json_response({}))
        app.router.add_get("/view", lambda r: web.FileResponse(folders[r.query.get("type", "output")]
                                                               / Path(r.query["filename"]).name))
        app.router.add_post("/upload/image", self.upload)
        app.router.add_get("/ws", self.websocket)
        app.router.add_static("/", WEB)
        return app


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8188
    base = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("/tmp/sdgraph-stub")
    web.run_app(Stub(base).app(), host="127.0.0.1", port=port)
