"""ComfyUI's `server` and `execution` modules for packs: routes on sdgraph's server, messages to the right
client, the queue, prompt handlers; and the same pack in the CLI, where no server runs."""
from __future__ import annotations

import io
import json
import struct
import sys
import textwrap
import uuid

import pytest
from aiohttp import WSMsgType
from PIL import Image

from sdgraph import face_hooks
from sdgraph.cache import OutputCache
from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.paths import Dirs
from sdgraph.plugins import load_custom_nodes
from sdgraph.registry import Registry
from tests.server.conftest import make_server, raw_request, receive_until_done  # noqa: F401 - the fixture

PACK = '''
import os
from aiohttp import web
from PIL import Image
import server
from server import PromptServer
import execution

routes = PromptServer.instance.routes


@routes.get("/toy/echo")
async def echo(request):
    return web.json_response({"q": request.query.get("q"), "pack": "toy"})


@routes.post("/toy/sum")
async def add(request):
    body = await request.json()
    return web.json_response({"sum": sum(body["numbers"])})


@routes.get("/queue")  # an API route: the pack must not take it over
async def fake_queue(request):
    return web.json_response({"fake": True})


if not PromptServer.instance.app.router.frozen:  # KJNodes adds a static folder this way, before the app exists
    PromptServer.instance.app.add_routes([web.static("/toy_static", os.path.join(os.path.dirname(__file__), "files"))])


def on_prompt(body):
    for node in body.get("prompt", {}).values():
        if node.get("inputs", {}).get("text") == "$WILD":
            node["inputs"]["text"] = "tamed"
    return body


def broken_handler(body):
    raise RuntimeError("a handler that fails is skipped")


PromptServer.instance.add_on_prompt_handler(broken_handler)
PromptServer.instance.add_on_prompt_handler(on_prompt)

PATCHED = []
_original = execution.PromptExecutor.handle_execution_error
def _patched(self, *args, **kwargs):
    PATCHED.append(args)
    return _original(self, *args, **kwargs)
execution.PromptExecutor.handle_execution_error = _patched


class Notify:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hi"})}, "hidden": {"unique_id": "UNIQUE_ID"}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "go"
    CATEGORY = "toy"
    OUTPUT_NODE = True

    def go(self, text, unique_id):
        ps = PromptServer.instance
        ps.send_sync("toy.note", {"node": unique_id, "text": text, "client": ps.client_id,
                                  "last": ps.last_node_id}, ps.client_id)
        ps.send_sync("toy.all", {"text": text})
        ps.send_sync("toy.list", [text, 1], ps.client_id)
        ps.send_progress_text("half way", unique_id)
        ps.send_sync(server.BinaryEventTypes.UNENCODED_PREVIEW_IMAGE,
                     ("PNG", Image.new("RGB", (3, 2), (255, 0, 0)), None), ps.client_id)
        running = list(ps.prompt_queue.currently_running.values())
        return {"ui": {"text": [text], "running": [len(running)],
                       "running_id": [running[0][1] if running else None]}, "result": (text,)}


class Requeue:
    """Queues its own workflow again until `count` reaches `until` (VideoHelperSuite's batch manager does this)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 0}), "until": ("INT", {"default": 2})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    CATEGORY = "toy"
    OUTPUT_NODE = True

    def go(self, count, until):
        queue = PromptServer.instance.prompt_queue
        number, prompt_id, prompt, extra_data, outputs = next(iter(queue.currently_running.values()))[:5]
        if count + 1 < until:
            prompt = json.loads(json.dumps(prompt))
            for node in prompt.values():
                if node["class_type"] == "ToyRequeue":
                    node["inputs"]["count"] = count + 1
            queue.put((number + 1, "again-" + str(count + 1), prompt, extra_data, outputs, {}))
        return {"ui": {"count": [count]}, "result": (count,)}


import json
NODE_CLASS_MAPPINGS = {"ToyNotify": Notify, "ToyRequeue": Requeue}
WEB_DIRECTORY = "./js"
'''

EXTENSION_JS = "import { app } from '../../scripts/app.js';\napp.registerExtension({ name: 'toy.hello' });\n"


def write_pack(base, name="toy_server_pack"):
    pack = base / "custom_nodes" / name
    (pack / "files").mkdir(parents=True)
    (pack / "js" / "lib").mkdir(parents=True)
    (pack / "__init__.py").write_text(textwrap.dedent(PACK))
    (pack / "files" / "hello.txt").write_text("static hello")
    (pack / "js" / "toy.js").write_text(EXTENSION_JS)
    (pack / "js" / "lib" / "helper.js").write_text("export const x = 1;\n")
    (pack / "js" / "notes.txt").write_text("not listed")
    (pack / "js" / "escape.js").symlink_to(pack / "__init__.py")  # a link out of the web folder
    (base / "custom_nodes" / "broken_pack").mkdir()
    (base / "custom_nodes" / "broken_pack" / "__init__.py").write_text("import no_such_module_xyz\n")
    return pack


@pytest.fixture
def pack_executor(tmp_path):
    base = tmp_path / "home"
    write_pack(base)
    dirs = Dirs(base=base, extra_model_roots=[])
    registry = Registry()
    load_custom_nodes(registry, dirs.custom_nodes, dirs)
    failed = [p for p in registry.problems if p.pack != "custom_nodes/broken_pack"]
    assert not failed, [p.message + p.traceback for p in failed]
    return Executor(registry, Services(dirs=dirs), OutputCache())


async def test_pack_routes_are_served_under_their_path_and_under_api(make_server, pack_executor, caplog):
    caplog.set_level("WARNING", "sdgraph.server")
    harness = await make_server(executor=pack_executor)
    refused = [r.getMessage() for r in caplog.records if "was not added" in r.getMessage()]
    assert refused == ["a plugin's route GET /queue was not added: sdgraph serves that path itself",
                       "a plugin's route GET /api/queue was not added: sdgraph serves that path itself"]
    client = harness.client
    for prefix in ("", "/api"):
        resp = await client.get(f"{prefix}/toy/echo", params={"q": "x"})
        assert resp.status == 200 and await resp.json() == {"q": "x", "pack": "toy"}
        resp = await client.post(f"{prefix}/toy/sum", json={"numbers": [1, 2, 3.5]})
        assert await resp.json() == {"sum": 6.5}
    resp = await client.get("/toy_static/hello.txt")  # added through PromptServer.instance.app before the app
    assert resp.status == 200 and await resp.text() == "static hello"
    resp = await client.get("/queue")  # sdgraph's own route still answers
    assert "queue_running" in await resp.json()


async def test_send_sync_reaches_the_client_that_queued_and_broadcasts_reach_all(make_server, pack_executor):
    harness = await make_server(executor=pack_executor)
    mine, other = await harness.ws("mine"), await harness.ws("other")
    prompt = {"5": {"class_type": "ToyNotify", "inputs": {"text": "$WILD"}}}
    submitted = await harness.submit(prompt, client_id="mine")
    frames = await receive_until_done(mine, submitted["prompt_id"])
    notes = [data for kind, data in frames if kind == "toy.note"]
    # the prompt handler rewrote the input; the message names the running node and its client
    assert notes == [{"node": "5", "text": "tamed", "client": "mine", "last": "5"}]
    assert [data for kind, data in frames if kind == "toy.all"] == [{"text": "tamed"}]
    assert [data for kind, data in frames if kind == "toy.list"] == [["tamed", 1]]
    binary = [data for kind, data in frames if kind == "binary"]
    node = b"5"
    assert struct.pack(">II", 3, len(node)) + node + b"half way" in binary
    previews = [b for b in binary if b[:8] == struct.pack(">II", 1, 2)]
    assert len(previews) == 1
    image = Image.open(io.BytesIO(previews[0][8:]))
    assert image.size == (3, 2) and image.convert("RGB").getpixel((1, 1)) == (255, 0, 0)
    entry = await harness.wait_done(submitted["prompt_id"])
    outputs = entry["outputs"]["5"]
    assert outputs["text"] == ["tamed"] and outputs["running"] == [1]
    assert outputs["running_id"] == [submitted["prompt_id"]]
    # the other client got the broadcast only
    seen = []
    while True:
        msg = await other.receive(timeout=2)
        if msg.type != WSMsgType.TEXT:
            continue
        frame = json.loads(msg.data)
        seen.append(frame["type"])
        if frame["type"] == "toy.all":
            break
    assert "toy.note" not in seen and "executing" not in seen


async def test_a_pack_requeues_its_workflow_through_prompt_queue(make_server, pack_executor):
    harness = await make_server(executor=pack_executor)
    prompt = {"1": {"class_type": "ToyRequeue", "inputs": {"count": 0, "until": 3}}}
    submitted = await harness.submit(prompt, client_id="c")
    first = await harness.wait_done(submitted["prompt_id"])
    assert first["outputs"]["1"]["count"] == [0]
    assert (await harness.wait_done("again-1"))["outputs"]["1"]["count"] == [1]
    assert (await harness.wait_done("again-2"))["outputs"]["1"]["count"] == [2]
    history = await (await harness.client.get("/history")).json()
    assert set(history) == {submitted["prompt_id"], "again-1", "again-2"}


async def test_extensions_are_listed_and_served_and_bad_paths_get_404(make_server, pack_executor):
    harness = await make_server(executor=pack_executor)
    client = harness.client
    listed = await (await client.get("/extensions")).json()
    assert listed == ["/extensions/toy_server_pack/lib/helper.js", "/extensions/toy_server_pack/toy.js"]
    assert await (await client.get("/api/extensions")).json() == listed
    resp = await client.get("/extensions/toy_server_pack/toy.js")
    assert resp.status == 200 and resp.content_type == "text/javascript"
    assert await resp.text() == EXTENSION_JS
    for bad in ("/extensions/toy_server_pack/../__init__.py", "/extensions/toy_server_pack/%2e%2e/__init__.py",
                "/extensions/no_such_pack/toy.js", "/extensions/toy_server_pack/missing.js",
                "/extensions/toy_server_pack/..%5c__init__.py", "/extensions/toy_server_pack/%00.js"):
        resp = await client.get(bad)
        assert resp.status == 404, (bad, resp.status)
        status, _, body = await raw_request(harness, "GET", bad)  # byte for byte, not normalised by a client
        assert status == 404 and b"NODE_CLASS_MAPPINGS" not in body, (bad, status)
    status, _, _ = await raw_request(harness, "GET", "/extensions/toy_server_pack/escape.js")
    assert status == 404


async def test_a_pack_that_failed_is_listed_with_its_missing_module(make_server, pack_executor):
    harness = await make_server(executor=pack_executor)
    problems = (await (await harness.client.get("/node_problems")).json())["problems"]
    broken = [p for p in problems if p["pack"] == "custom_nodes/broken_pack"]
    assert len(broken) == 1 and broken[0]["missing_module"] == "no_such_module_xyz"
    assert "no_such_module_xyz" in broken[0]["message"]
    info = await (await harness.client.get("/object_info")).json()
    assert "ToyNotify" in info and all("input" in v for v in info.values())  # ComfyUI's shape is kept


def test_without_a_server_messages_go_nowhere_and_routes_are_kept(pack_executor):
    assert face_hooks.current_face() is None
    events = []
    result = pack_executor.run({"5": {"class_type": "ToyNotify", "inputs": {"text": "cli"}}},
                               listener=lambda name, data: events.append(name), extra_data={"client_id": "cli-1"})
    assert result.status == "success", result.error
    assert result.outputs["5"]["running"] == [0]
    paths = {getattr(d, "path", None) for d in face_hooks.route_definitions()}
    assert {"/toy/echo", "/toy/sum"} <= paths
    server = sys.modules["server"]
    assert server.PromptServer.instance.client_id == "cli-1"  # the latest prompt's client, as ComfyUI keeps it
    assert server.PromptServer.instance.loop is None
    server.PromptServer.instance.prompt_queue.put((1, str(uuid.uuid4()), {}, {}, []))  # dropped, no error


def test_execution_module_takes_a_packs_patch_without_effect(pack_executor):
    import execution

    pack = sys.modules["sdgraph_custom_nodes.toy_server_pack"]
    assert execution.PromptExecutor.handle_execution_error is pack._patched
    assert execution.ExecutionBlocker(None).message is None
    with pytest.raises(NotImplementedError, match="own executor"):
        execution.PromptExecutor().execute({}, "p")


def test_web_folders_of_a_one_file_pack_and_of_extension_web_dirs_and_the_io_folders(tmp_path):
    base = tmp_path / "fresh"
    custom = base / "custom_nodes"
    (custom / "solo_web").mkdir(parents=True)
    (custom / "solo.py").write_text('WEB_DIRECTORY = "solo_web"\nNODE_CLASS_MAPPINGS = {}\n')
    named = custom / "impact_like"
    (named / "js").mkdir(parents=True)
    (named / "__init__.py").write_text(
        "import os, nodes\n"
        "nodes.EXTENSION_WEB_DIRS['Impact-Like'] = os.path.join(os.path.dirname(__file__), 'js')\n"
        "NODE_CLASS_MAPPINGS = {}\n"
        "WEB_DIRECTORY = './no_such_folder'\n")
    registry = Registry()
    load_custom_nodes(registry, custom, Dirs(base=base, extra_model_roots=[]))
    assert not registry.problems, [p.message for p in registry.problems]
    # a one-file pack's folder is relative to custom_nodes/; a missing WEB_DIRECTORY is ignored, as in ComfyUI
    assert registry.web_dirs == {"solo": (custom / "solo_web").resolve(), "Impact-Like": (named / "js").resolve()}
    assert all((base / name).is_dir() for name in ("input", "output", "temp"))  # packs list them at load


async def test_with_a_token_pack_routes_need_it_and_extension_files_do_not(make_server, pack_executor):
    from sdgraph.server import ServerConfig

    harness = await make_server(ServerConfig(token="s3cret"), executor=pack_executor)
    client = harness.client
    assert (await client.get("/toy/echo")).status == 401
    assert (await client.get("/extensions")).status == 401
    assert (await client.get("/node_problems")).status == 401
    assert (await client.get("/toy/echo", params={"token": "s3cret"})).status == 200
    assert (await client.get("/extensions", headers={"Authorization": "Bearer s3cret"})).status == 200
    resp = await client.get("/extensions/toy_server_pack/toy.js")  # code, like the editor's own files
    assert resp.status == 200 and await resp.text() == EXTENSION_JS
