"""Run one workflow built from five fetched custom node packs in sdgraph and in ComfyUI, and compare (issue 17).

An evaluation command, not a test (the packs are third-party and not committed). The workflow needs no model:
a picture made with PIL goes through ComfyUI_essentials' resize and flip, KJNodes' concatenate, size, color
mask and INT constant, rgthree's Context and Any Switch, Inspire's ColorMapToMasks, and is saved by core
SaveImage and by VideoHelperSuite's VHS_VideoCombine (a GIF through PIL, a lossless FFV1 mkv through ffmpeg).

Each side runs in a child process on its own copy of the packs and its own base directory, with the same
import-time torchvision stand-in where torchvision cannot be imported (tools/pack_report.py). The parent prints per node what each side did, then
compares the UI outputs, the saved images' pixels and the videos' decoded frames.

    python -m tools.pack_workflow /tmp/lead/packs/custom_nodes --comfyui /tmp/comfyui --scratch /tmp/pack-workflow
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pack_report import missing, write_stand_in  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKS = ("ComfyUI_essentials", "ComfyUI-KJNodes", "rgthree-comfy", "ComfyUI-Inspire-Pack", "ComfyUI-VideoHelperSuite")
SOURCE = "pw_source.png"
_FFV1 = {"level": "3", "coder": "1", "context": "1", "gop_size": 1, "slices": "16", "slicecrc": "1",
         "pix_fmt": "rgba64le", "save_metadata": True, "trim_to_audio": False}  # the widgets the editor would send


_PACK_OF = {"ImageResize+": "essentials", "ImageFlip+": "essentials", "INTConstant": "KJNodes",
            "ImageGridComposite2x2": "KJNodes", "GetImageSizeAndCount": "KJNodes", "ColorToMask": "KJNodes",
            "ImageConcanate": "KJNodes", "Context (rgthree)": "rgthree", "Any Switch (rgthree)": "rgthree",
            "ColorMapToMasks //Inspire": "Inspire", "VHS_VideoCombine": "VHS"}


def _node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


WORKFLOW: dict[str, dict[str, Any]] = {
    "1": _node("LoadImage", image=SOURCE),
    "2": _node("ImageResize+", image=["1", 0], width=96, height=96, interpolation="lanczos",
               method="keep proportion", condition="always", multiple_of=0),
    "3": _node("ImageFlip+", image=["2", 0], axis="x"),
    "4": _node("INTConstant", value=24),
    "5": _node("ImageGridComposite2x2", image1=["2", 0], image2=["3", 0], image3=["3", 0], image4=["2", 0]),
    "6": _node("GetImageSizeAndCount", image=["5", 0]),
    "7": _node("ColorToMask", images=["6", 0], invert=False, red=255, green=0, blue=0, threshold=["4", 0],
               per_batch=16),
    "8": _node("Context (rgthree)"),
    "9": _node("Context (rgthree)", base_ctx=["8", 0], images=["6", 0], seed=["4", 0]),
    "10": _node("Any Switch (rgthree)", any_01=["8", 7], any_02=["9", 7]),  # the empty context's IMAGE is None
    "11": _node("ColorMapToMasks //Inspire", color_map=["10", 0], min_pixels=50, max_count=4),
    "12": _node("MaskToImage", mask=["11", 0]),
    "13": _node("ImageBatch", image1=["10", 0], image2=["12", 0]),
    "14": _node("VHS_VideoCombine", images=["13", 0], frame_rate=4, loop_count=0, filename_prefix="pw_gif",
                format="image/gif", pingpong=False, save_output=True),
    "15": _node("VHS_VideoCombine", images=["13", 0], frame_rate=4, loop_count=0, filename_prefix="pw_ffv1",
                format="video/ffv1-mkv", pingpong=False, save_output=True, **_FFV1),
    "16": _node("SaveImage", images=["10", 0], filename_prefix="pw_image"),
    "17": _node("MaskToImage", mask=["7", 0]),
    "18": _node("SaveImage", images=["17", 0], filename_prefix="pw_mask"),
}
# KJNodes' ImageConcanate is written for a newer ComfyUI than the reference checkout (an io.MatchType.Output
# without an id, model_management.intermediate_dtype): the reference cannot run it, so only sdgraph's side gets
# it, and its picture is compared with the top row of the 2x2 grid (the same two images side by side).
SDGRAPH_ONLY: dict[str, dict[str, Any]] = {
    "19": _node("ImageConcanate", image1=["2", 0], image2=["3", 0], direction="right", match_image_size=True),
    "20": _node("SaveImage", images=["19", 0], filename_prefix="pw_concat"),
}


def make_source(path: Path) -> None:
    """A 64x48 picture with flat colour regions (for the colour masks) and a gradient (for the resampling)."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    image = Image.new("RGB", (64, 48))
    image.putdata([(x * 4, y * 5, 128) for y in range(48) for x in range(64)])
    draw = ImageDraw.Draw(image)
    draw.rectangle((4, 4, 27, 23), fill=(255, 0, 0))
    draw.ellipse((34, 14, 59, 41), fill=(0, 0, 255))
    draw.rectangle((8, 30, 25, 44), fill=(255, 255, 0))
    image.save(path)


def prepare_base(base: Path, custom_nodes: Path, packs: tuple[str, ...] = PACKS,
                 source: Callable[[Path], None] = make_source, name: str = SOURCE) -> None:
    """A side's base directory: its own copy of the packs, ComfyUI's folders, the source picture in input/."""
    for pack in packs:
        shutil.copytree(custom_nodes / pack, base / "custom_nodes" / pack, symlinks=True)
    for sub in ("input", "output", "temp", "models"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    source(base / "input" / name)


# ---- the two sides, each in a child process -----------------------------------------------------------------

def _events(messages: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per node: how it ended (executed / cached / error and the message), from the executor's events."""
    nodes: dict[str, Any] = {}
    for event, data in messages:
        node = data.get("node") or data.get("node_id")
        if event == "executing" and node:
            nodes.setdefault(str(node), {"state": "ran"})
        elif event == "executed" and node:
            nodes[str(node)] = {"state": "ran+ui"}
        elif event == "execution_cached":
            for cached in data.get("nodes", []):
                nodes[str(cached)] = {"state": "cached"}
        elif event == "execution_error" and node:
            nodes[str(node)] = {"state": "error", "message": f"{data.get('exception_type')}: "
                                                              f"{data.get('exception_message')}"}
    return nodes


def _sdgraph_child(base: Path, out: Path, workflow: dict[str, Any] | None = None) -> None:
    from sdgraph.runtime import RuntimeOptions, create_executor  # noqa: PLC0415

    messages: list[tuple[str, dict[str, Any]]] = []
    executor = create_executor(RuntimeOptions(base_dir=base, cpu=True))
    prompt = {**WORKFLOW, **SDGRAPH_ONLY} if workflow is None else workflow
    result = executor.run(prompt, listener=lambda e, d: messages.append((e, d)))
    states = _events(messages)
    for node in result.executed:
        states.setdefault(str(node), {"state": "ran"})
    for node, error in result.node_errors.items():
        states[str(node)] = {"state": "invalid", "message": json.dumps(error)[:300]}
    error = result.error or {}
    out.write_text(json.dumps({"status": result.status, "nodes": states, "ui": result.outputs,
                               "error": error.get("exception_message")}, indent=1, default=str))


class _Server:
    """What ComfyUI's executor writes its messages to (the packs see the real PromptServer.instance)."""

    def __init__(self) -> None:
        self.client_id: str | None = None
        self.last_node_id = None
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def send_sync(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        self.messages.append((event, data))


def _comfyui_child(comfyui: Path, base: Path, stand_in: Path, out: Path,
                   workflow: dict[str, Any] | None = None) -> None:
    import asyncio  # noqa: PLC0415

    workflow = WORKFLOW if workflow is None else workflow
    (stand_in.parent / "reference-stand-in").mkdir(exist_ok=True)
    if missing("spandrel"):
        write_stand_in(stand_in.parent / "reference-stand-in", "spandrel", ("",))
    sys.path[:0] = [str(stand_in), str(stand_in.parent / "reference-stand-in"), str(comfyui)]
    sys.argv = [sys.argv[0], "--cpu", "--base-directory", str(base)]
    import comfy.options  # noqa: PLC0415

    comfy.options.enable_args_parsing()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    import utils.install_util  # noqa: F401, PLC0415 - as main.py does, before nodes.py
    import app.frontend_management as frontend  # noqa: PLC0415

    static = base / "frontend-static"
    static.mkdir(exist_ok=True)
    frontend.FrontendManager.init_frontend = classmethod(lambda cls, version: str(static))
    import server  # noqa: PLC0415

    server.PromptServer(loop)
    import execution  # noqa: PLC0415
    import nodes  # noqa: PLC0415

    loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True))
    absent = sorted({n["class_type"] for n in workflow.values()} - set(nodes.NODE_CLASS_MAPPINGS))
    # as the server does: the prompt validation converted (FLOAT widgets to float, say) is the one that runs
    prompt = json.loads(json.dumps(workflow))
    valid = loop.run_until_complete(execution.validate_prompt("pw", prompt, None))
    sink = _Server()
    executor = execution.PromptExecutor(sink, cache_type=execution.CacheType.CLASSIC)
    loop.run_until_complete(executor.execute_async(prompt, "pw", {"client_id": "reference"}, valid[2]))
    states = _events(sink.messages)
    errors = [d.get("exception_message") for e, d in sink.messages if e == "execution_error"]
    out.write_text(json.dumps({"status": "success" if executor.success else "error", "nodes": states,
                               "ui": executor.history_result.get("outputs", {}), "missing": absent,
                               "valid": [valid[0], str(valid[1])[:300]], "error": (errors or [None])[0]},
                              indent=1, default=str))


def fresh_scratch(scratch: Path) -> Path:
    """An empty scratch directory; returns its stand-in folder (a torchvision stand-in only where this Python
    cannot import torchvision, as in tools/pack_report.py)."""
    shutil.rmtree(scratch, ignore_errors=True)
    stand_in = scratch / "stand-in"
    stand_in.mkdir(parents=True)
    if missing("torchvision"):
        write_stand_in(stand_in)
    return stand_in


def run_both(comfyui: Path, scratch: Path, stand_in: Path, workflow: Path | None = None
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each side's child on its base directory (scratch/sdgraph-base, scratch/comfyui-base): what each did."""
    extra = [str(workflow)] if workflow is not None else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(stand_in), str(ROOT)])}
    _run_child(["--sdgraph-child", str(scratch / "sdgraph-base"), str(scratch / "sdgraph.json"), *extra], env,
               scratch / "sdgraph.log")
    _run_child(["--comfyui-child", str(comfyui), str(scratch / "comfyui-base"), str(stand_in),
                str(scratch / "comfyui.json"), *extra], {**os.environ, "PYTHONPATH": ""}, scratch / "comfyui.log")
    return json.loads((scratch / "sdgraph.json").read_text()), json.loads((scratch / "comfyui.json").read_text())


def _run_child(args: list[str], env: dict[str, str], log: Path) -> None:
    with open(log, "w") as sink:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *args], stdout=sink,
                              stderr=subprocess.STDOUT, env=env, cwd=log.parent)
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed (exit {done.returncode}):\n" + log.read_text()[-3000:])


# ---- the comparison -----------------------------------------------------------------------------------------

def _ui_files(ui: dict[str, Any]) -> dict[str, list[str]]:
    """Per output node, the files its UI output names (images, VHS's videos and first frames), in output/."""
    found: dict[str, list[str]] = {}
    for node, outputs in ui.items():
        for key in ("images", "gifs"):
            for item in outputs.get(key, []) or []:
                if isinstance(item, dict) and "filename" in item:
                    found.setdefault(node, []).append(os.path.join(item.get("subfolder", ""), item["filename"]))
                if isinstance(item, dict) and item.get("workflow"):  # VHS's first frame, the workflow embedded
                    found.setdefault(node, []).append(os.path.join(item.get("subfolder", ""), item["workflow"]))
    return found


def _frames(path: Path) -> Any:
    """A saved image's or video's frames as one uint array (N, H, W, C), decoded losslessly."""
    import numpy as np  # noqa: PLC0415
    from PIL import Image, ImageSequence  # noqa: PLC0415

    if path.suffix in (".png", ".gif", ".webp"):
        with Image.open(path) as image:
            return np.stack([np.asarray(f.convert("RGBA")) for f in ImageSequence.Iterator(image)])
    import imageio_ffmpeg  # noqa: PLC0415

    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "rgba64le", "-"], capture_output=True, check=True).stdout
    reader = imageio_ffmpeg.read_frames(str(path))  # its first item is the stream's description
    width, height = next(reader)["size"]
    reader.close()
    return np.frombuffer(raw, dtype="<u2").reshape(-1, height, width, 4)


def compare_files(ours: Path, ref: Path) -> str:
    import numpy as np  # noqa: PLC0415

    a, b = _frames(ours), _frames(ref)
    if a.shape != b.shape:
        return f"shapes differ: {a.shape} vs {b.shape}"
    diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
    what = f"{a.shape[0]} frame(s) {a.shape[2]}x{a.shape[1]} {a.dtype}"
    if not diff.any():
        return f"bit-exact, {what}"
    return f"max |diff| {diff.max()}, {np.count_nonzero(diff)} of {diff.size} values differ, {what}"


def compare_metadata(ours: Path, ref: Path) -> str:
    """The PNG text chunks: the embedded prompt node by node, after the keys each side adds of its own."""
    from PIL import Image  # noqa: PLC0415

    if ours.suffix != ".png":
        return ""
    with Image.open(ours) as a, Image.open(ref) as b:
        mine, theirs = dict(a.info), dict(b.info)
    notes = [f"chunks {sorted(mine)} vs {sorted(theirs)}"] if sorted(mine) != sorted(theirs) else []
    if "prompt" in mine and "prompt" in theirs:
        got, want = json.loads(mine["prompt"]), json.loads(theirs["prompt"])
        got = {k: v for k, v in got.items() if k not in SDGRAPH_ONLY}
        added = sorted({key for node in got.values() for key in node} - {"class_type", "inputs"})
        added_ref = sorted({key for node in want.values() for key in node} - {"class_type", "inputs"})
        strip = set(added) | set(added_ref)
        same = ({k: {f: x for f, x in v.items() if f not in strip} for k, v in got.items()}
                == {k: {f: x for f, x in v.items() if f not in strip} for k, v in want.items()})
        notes.append(f"prompt {'equal' if same else 'DIFFERS'} but for the keys sdgraph adds {added}, "
                     f"ComfyUI adds {added_ref}")
    return "; metadata: " + ", ".join(notes) if notes else ""


def _strip_ui(ui: dict[str, Any], base: Path) -> dict[str, Any]:
    """The UI output with the side's own base directory (in VHS's `fullpath`) written as <base>."""
    return json.loads(json.dumps(ui, default=str).replace(str(base), "<base>"))


def report(ours: dict[str, Any], ref: dict[str, Any], base_ours: Path, base_ref: Path) -> list[str]:
    lines = [f"sdgraph: {ours['status']} {ours.get('error') or ''}".rstrip(),
             f"ComfyUI: {ref['status']} {ref.get('error') or ''} (missing classes: {ref['missing']}, "
             f"valid: {ref['valid'][0]})".rstrip(), "", f"{'node':>4} {'class':28} {'pack':10} {'sdgraph':10} {'ComfyUI':10}"]
    for node in sorted({**WORKFLOW, **SDGRAPH_ONLY}, key=int):
        got = ours["nodes"].get(node, {"state": "-"})
        want = ref["nodes"].get(node, {"state": "-"})
        why = got.get("message") or want.get("message") or ""
        kind = {**WORKFLOW, **SDGRAPH_ONLY}[node]["class_type"]
        lines.append(f"{node:>4} {kind:28} {_PACK_OF.get(kind, 'core'):10} {got['state']:10} {want['state']:10} {why[:120]}")
    lines += ["", "UI outputs:"]
    for node in sorted(set(ours["ui"]) | set(ref["ui"]), key=int):
        a, b = _strip_ui(ours["ui"].get(node, {}), base_ours), _strip_ui(ref["ui"].get(node, {}), base_ref)
        verdict = "sdgraph only" if node in SDGRAPH_ONLY else "equal" if a == b else "DIFFER"
        lines.append(f"  {node}: {verdict} {json.dumps(a)[:150]}")
        if a != b and node not in SDGRAPH_ONLY:
            lines.append(f"  {'':{len(node)}}  ComfyUI: {json.dumps(b)[:150]}")
    lines += ["", "saved files (sdgraph vs ComfyUI, pixels/frames decoded):"]
    files_ours, files_ref = _ui_files(ours["ui"]), _ui_files(ref["ui"])
    for node in sorted(set(files_ours) | set(files_ref), key=int):
        for mine, theirs in zip(files_ours.get(node, []), files_ref.get(node, [])):
            result = compare_files(base_ours / "output" / mine, base_ref / "output" / theirs)
            result += compare_metadata(base_ours / "output" / mine, base_ref / "output" / theirs)
            lines.append(f"  {node}: {mine}: {result}")
        if len(files_ours.get(node, [])) != len(files_ref.get(node, [])) and node not in SDGRAPH_ONLY:
            lines.append(f"  {node}: file lists differ: {files_ours.get(node)} vs {files_ref.get(node)}")
    return lines


def meaning_checks(base_ours: Path, base_ref: Path) -> list[str]:
    """What the saved files must show whatever either side did, on sdgraph's files (ComfyUI's where named)."""
    import numpy as np  # noqa: PLC0415

    out = base_ours / "output"
    grid = _frames(out / "pw_image_00001_.png")[0, ..., :3].astype(np.int64)
    source = _frames(base_ours / "input" / SOURCE)[0, ..., :3]
    top, left = grid[:72], grid[:72, :96]
    checks = [
        ("grid is 192x144 (64x48 kept in proportion into 96x96 is 96x72, four of them)", grid.shape[:2] == (144, 192)),
        ("ImageFlip+ x: the top row's right half is its left half mirrored", (top[:, 96:] == left[:, ::-1]).all()),
        ("grid's bottom row is its top row with the halves swapped",
         (grid[72:, :96] == top[:, 96:]).all() and (grid[72:, 96:] == left).all()),
        ("the red rectangle survives the lanczos resize (a flat red patch at its centre)",
         (left[20:30, 20:30] == [255, 0, 0]).all() and (source[10:18, 10:20] == [255, 0, 0]).all()),
    ]
    concat = _frames(out / "pw_concat_00001_.png")[0, ..., :3].astype(np.int64)
    ref_grid = _frames(base_ref / "output" / "pw_image_00001_.png")[0, ..., :3].astype(np.int64)
    checks.append(("ImageConcanate (sdgraph only) equals the top row of ComfyUI's grid",
                   concat.shape == top.shape and (concat == ref_grid[:72]).all()))
    mask = _frames(out / "pw_mask_00001_.png")[0, ..., 0] > 127
    near_red = np.linalg.norm(grid - [255, 0, 0], axis=-1) <= 24  # ColorToMask's rule, on the saved 8-bit picture
    checks.append((f"ColorToMask red<=24: {mask.sum()} pixels, {np.count_nonzero(mask != near_red)} differ from "
                   "the rule applied to the saved picture (8-bit rounding at the edges)",
                   np.count_nonzero(mask != near_red) <= 0.01 * mask.size and mask.sum() > 0))
    colours, counts = np.unique(grid.reshape(-1, 3), axis=0, return_counts=True)
    frames = _frames(out / "pw_ffv1_00001.mkv")
    expected = 1 + min(4, int((counts >= 50).sum()))
    checks.append((f"the video has 1 + ColorMapToMasks' masks = {expected} frames (colours with >= 50 pixels, "
                   "at most 4)", frames.shape[0] == expected))
    first = np.round(frames[0, ..., :3] / 257).astype(np.int64)
    checks.append(("the FFV1 video's first frame (16-bit) is the grid", (first == grid).all()))
    masks = frames[1:, ..., 0] > 32767
    big = colours[np.argsort(-counts, kind="stable")][:expected - 1]
    checks.append(("each mask frame is one of the most frequent colours' pixels",
                   all((m == (grid == c).all(-1)).all() for m, c in zip(masks, big))))
    return [f"  {'ok ' if good else 'BAD'} {text}" for text, good in checks]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--sdgraph-child":  # [workflow.json]: another tool's workflow (tools/impact_workflow.py)
        _sdgraph_child(Path(argv[1]), Path(argv[2]), *(json.loads(Path(a).read_text()) for a in argv[3:4]))
        return 0
    if argv and argv[0] == "--comfyui-child":
        _comfyui_child(*(Path(a) for a in argv[1:5]), *(json.loads(Path(a).read_text()) for a in argv[5:6]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("custom_nodes", type=Path, nargs="?", default=Path("/tmp/lead/packs/custom_nodes"))
    parser.add_argument("--comfyui", type=Path, default=Path("/tmp/comfyui"))
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/pack-workflow"))
    args = parser.parse_args(argv)
    scratch = args.scratch.resolve()
    stand_in = fresh_scratch(scratch)
    base_ours, base_ref = scratch / "sdgraph-base", scratch / "comfyui-base"
    prepare_base(base_ours, args.custom_nodes.resolve())
    prepare_base(base_ref, args.custom_nodes.resolve())
    ours, ref = run_both(args.comfyui, scratch, stand_in)
    print("\n".join(report(ours, ref, base_ours, base_ref)))
    print("\nwhat the outputs must show:")
    print("\n".join(meaning_checks(base_ours, base_ref)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
