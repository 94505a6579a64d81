"""How many nodes of a custom_nodes directory ComfyUI declares, against how many sdgraph loads (issue 17).

An evaluation command, not a test. For each pack (a `.py` file or a package folder) it reports:

- ComfyUI: the length of the pack's NODE_CLASS_MAPPINGS (or its V3 entry point's node list) after ComfyUI's own
  loader (`nodes.load_custom_node`) imported it, in a child process running a ComfyUI checkout on the CPU with
  its built-in extras and a PromptServer in place (as `main.py` starts them), and its import error if it failed;
- sdgraph: the nodes `sdgraph nodes --json --base-dir ...` lists for the pack, and every problem it records.

Each side imports its own copy of the directory (packs write config files into themselves). ComfyUI imports
torchvision; where this Python has none (the system Python here: PyPI's torchvision breaks its torch), both
sides get the same import-time torchvision stand-in (its classes raise when used), so packs that only import it
at load time load on both, like for like. `--no-stand-in` leaves it out of sdgraph's side. ComfyUI's side gets
one for spandrel (a requirement of ComfyUI itself) where that is missing too. Where the real module is
installed, no stand-in is made (the report's first line says which were).
`--assume server,execution,comfy_api` projects what is left once those modules exist (see _PERMISSIVE).

    python -m tools.pack_report /path/to/custom_nodes --comfyui /tmp/comfyui [--json out.json]

Impact Pack (its subpack imports ultralytics, which needs a real torchvision) is measured in a venv of its own,
never the system Python (x86_64, Python 3.11; torch 2.14.1 and torchvision 0.29.1 lie on this disk; ~7 GB):

    python3 -m venv /tmp/impactvenv && V=/tmp/impactvenv/bin
    $V/pip install torch==2.14.1 torchvision==0.29.1
    printf 'torch==2.14.1\ntorchvision==0.29.1\n' > /tmp/pins.txt     # keep that torch through what follows
    # sdgraph's requirements (pyproject.toml), ComfyUI's (for its loader), Impact's and its subpack's
    $V/pip install -c /tmp/pins.txt diffusers transformers networkx pydantic aiohttp safetensors pillow tqdm \
        torchsde kornia pytest pytest-asyncio hypothesis \
        einops tokenizers sentencepiece pyyaml scipy psutil alembic SQLAlchemy av pydantic-settings yarl spandrel \
        segment-anything scikit-image piexif opencv-python-headless GitPython dill matplotlib 'ultralytics!=8.2.87'
    $V/pip install --no-deps -e .                                    # from the sdgraph checkout
    # the packs: Impact Pack's snapshot (2024-10-24) loads its subpack from impact_subpack/, as its install.py
    # clones it; the subpack of that time is commit bd4dedc. Today's subpack is a pack of its own.
    I=/work/.mirror/ltdrdata+ComfyUI-Impact-Pack/repo S=/work/.mirror/ltdrdata+ComfyUI-Impact-Subpack/repo
    mkdir -p /tmp/cn_impact/ComfyUI-Impact-Pack/impact_subpack /tmp/cn_subpack/ComfyUI-Impact-Subpack
    git --git-dir=$I archive HEAD | tar -x -C /tmp/cn_impact/ComfyUI-Impact-Pack
    git --git-dir=$S archive bd4dedc | tar -x -C /tmp/cn_impact/ComfyUI-Impact-Pack/impact_subpack
    git --git-dir=$S archive HEAD | tar -x -C /tmp/cn_subpack/ComfyUI-Impact-Subpack
    $V/python -m tools.pack_report /tmp/cn_impact --comfyui /tmp/comfyui    # and /tmp/cn_subpack
    $V/python -m tools.impact_workflow /tmp/cn_impact --comfyui /tmp/comfyui # its nodes run in both engines

Measured so (2026-12-03, ComfyUI a125cd84): Impact Pack 187 of 187 (its 186 and the bundled subpack's
UltralyticsDetectorProvider), today's Impact Subpack 1 of 1, the same names on both sides, no stand-in. Only
in both packs together does the subpack's node clash: sdgraph keeps the first pack's and reports the clash
(ComfyUI lets the later one replace it silently). The numpy<2 of Impact's requirements.txt is reported, not
needed. ComfyUI's tree in that snapshot lacks one blob (a tokenizer.json of an LLM text encoder): export it
file by file (`git ls-tree -r HEAD` and `git cat-file blob`), skipping that one.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_STAND_IN = (
    "class _Meta(type):\n"
    "    def __getattr__(cls, name):\n"  # class attributes (InterpolationMode.BICUBIC) are stand-ins too
    "        if name.startswith('__'):\n"
    "            raise AttributeError(name)\n"
    "        return cls\n"
    "class _Missing(metaclass=_Meta):\n"
    "    def __init__(self, *a, **k):\n"
    "        raise RuntimeError('torchvision stand-in (tools/pack_report.py): not available here')\n"
    "def __getattr__(name):\n"
    "    if name.startswith('__'):\n"
    "        raise AttributeError(name)\n"
    "    return _Missing\n"
    "__version__ = '0.0.0+stand-in'\n"
)
_STAND_IN_MODULES = ("", "transforms", "transforms/functional", "transforms/v2", "transforms/v2/functional",
                     "io", "ops", "ops/boxes", "utils", "models", "datasets", "datasets/utils")


def missing(name: str) -> bool:
    """True when this Python cannot import `name` (a stand-in is then put in its place)."""
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a torchvision that fails to import beside this torch counts as missing
        return True
    return False


def write_stand_in(where: Path, name: str = "torchvision", subs: tuple[str, ...] = _STAND_IN_MODULES) -> Path:
    for sub in subs:
        package = where / name / sub
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(_STAND_IN.replace("torchvision", name))
    return where


# A projection, not a measurement: permissive stand-ins for modules other work provides (`--assume server,...`),
# so the report shows what is left once they exist. Every attribute is an object that takes any call, and a
# class deriving from one is a plain class (so a V3 node built on a stand-in io.ComfyNode still fails to load).
_PERMISSIVE = """
import importlib.abc, importlib.machinery, sys, types
NAMES = set({names!r})

class _Any:
    def __init__(self, *a, **k): pass
    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _Any()
    def __call__(self, *a, **k):
        return a[0] if len(a) == 1 and callable(a[0]) and not k else _Any()
    def __iter__(self): return iter(())
    def __contains__(self, item): return True
    def __getitem__(self, key): return _Any()
    def __mro_entries__(self, bases): return (object,)

class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _Any()

class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        module = _Module(spec.name)
        module.__path__ = []
        return module
    def exec_module(self, module): pass

class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition('.')[0] in NAMES:
            return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=True)
        return None

sys.meta_path.append(_Finder())
"""


def write_permissive(where: Path, names: list[str]) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "sitecustomize.py").write_text(_PERMISSIVE.format(names=sorted(names)))
    return where


def pack_names(custom_nodes: Path) -> list[str]:
    """The entries both loaders import: .py files and folders with an __init__.py (not hidden or disabled)."""
    return sorted(p.name if p.is_dir() else p.stem for p in custom_nodes.iterdir()
                  if not p.name.startswith((".", "_")) and not p.name.endswith(".disabled")
                  and ((p.is_file() and p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").is_file())))


# ---- ComfyUI's side: run in a child process (`--reference-child`) -------------------------------------------

def _reference_child(comfyui: Path, base: Path, stand_in: Path, out: Path) -> None:
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415

    # ComfyUI's own requirement spandrel cannot be installed here either (it pins torchvision); only ComfyUI's
    # side gets a stand-in for it, since sdgraph's upscale models never import it
    reference_stand_in = stand_in.parent / "reference-stand-in"
    reference_stand_in.mkdir(exist_ok=True)
    if missing("spandrel"):
        write_stand_in(reference_stand_in, "spandrel", ("",))
    sys.path[:0] = [str(stand_in), str(reference_stand_in), str(comfyui)]
    sys.argv = [sys.argv[0], "--cpu", "--base-directory", str(base)]
    import comfy.options  # noqa: PLC0415

    comfy.options.enable_args_parsing()
    warnings: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    logging.basicConfig(level=logging.INFO)
    logging.getLogger().addHandler(_Collect())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    import utils.install_util  # noqa: F401, PLC0415 - main.py imports it before nodes.py puts comfy/ on sys.path
    import app.frontend_management as frontend  # noqa: PLC0415

    static = base / "frontend-static"  # the web frontend is a separate package, not needed to load packs
    static.mkdir(exist_ok=True)
    frontend.FrontendManager.init_frontend = classmethod(lambda cls, version: str(static))
    import server  # noqa: PLC0415

    server.PromptServer(loop)  # packs reach PromptServer.instance at import time
    import nodes  # noqa: PLC0415

    loop.run_until_complete(nodes.init_public_apis())
    loop.run_until_complete(nodes.init_builtin_extra_nodes())
    base_names = set(nodes.NODE_CLASS_MAPPINGS)
    results: dict[str, Any] = {}
    for name in pack_names(base / "custom_nodes"):
        path = base / "custom_nodes" / name
        path = path if path.is_dir() else path.with_suffix(".py")
        warnings.clear()
        before = set(nodes.NODE_CLASS_MAPPINGS)
        ok = loop.run_until_complete(nodes.load_custom_node(str(path), base_names))
        module = sys.modules.get(str(path).replace(".", "_x_") if path.is_dir() else str(path.with_suffix("")))
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None) if module is not None else None
        names = sorted(mappings) if isinstance(mappings, dict) else sorted(set(nodes.NODE_CLASS_MAPPINGS) - before)
        declared = len(names)
        errors = [w for w in warnings if w.startswith("Cannot import") or "comfy_entrypoint" in w or "Skip" in w]
        results[name] = {"declared": declared if ok else 0, "error": None if ok else (errors or warnings or ["?"])[-1],
                         "names": names if ok else []}
    out.write_text(json.dumps(results, indent=1))


def reference_counts(comfyui: Path, custom_nodes: Path, scratch: Path, stand_in: Path) -> dict[str, Any]:
    base = scratch / "comfyui-base"
    shutil.copytree(custom_nodes, base / "custom_nodes", symlinks=True)
    out = scratch / "comfyui.json"
    log = scratch / "comfyui.log"
    with open(log, "w") as sink:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--reference-child", str(comfyui),
                               str(base), str(stand_in), str(out)], cwd=scratch, stdout=sink,
                              stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ""})
    if done.returncode != 0:
        raise SystemExit(f"ComfyUI's loader failed (exit {done.returncode}):\n" + log.read_text()[-3000:])
    return json.loads(out.read_text())


# ---- sdgraph's side -----------------------------------------------------------------------------------------

def sdgraph_counts(custom_nodes: Path, scratch: Path, stand_in: Path | None, assume: list[str] | None = None
                   ) -> dict[str, Any]:
    base = scratch / "sdgraph-base"
    shutil.copytree(custom_nodes, base / "custom_nodes", symlinks=True)
    for sub in ("input", "output", "temp", "models"):  # as ComfyUI makes them at start; packs list input/
        (base / sub).mkdir(exist_ok=True)
    path = [str(stand_in)] if stand_in is not None else []
    if assume:
        path.insert(0, str(write_permissive(scratch / "permissive", assume)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(ROOT)])}
    done = subprocess.run([sys.executable, "-m", "sdgraph.cli", "nodes", "--json", "--cpu", "--base-dir", str(base)],
                          cwd=scratch, env=env, capture_output=True, text=True)
    (scratch / "sdgraph.log").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"sdgraph nodes failed (exit {done.returncode}):\n" + done.stderr[-3000:])
    listing = json.loads(done.stdout)
    results: dict[str, Any] = {name: {"loaded": 0, "problems": [], "names": []} for name in pack_names(custom_nodes)}
    for info in listing["nodes"].values():
        pack = str(info.get("python_module", "")).replace("custom_nodes.", "custom_nodes/", 1)  # V3: ComfyUI's form
        if pack.startswith("custom_nodes/") and pack[13:] in results:
            results[pack[13:]]["loaded"] += 1
            results[pack[13:]]["names"].append(info.get("name"))
    for problem in listing["problems"]:
        pack = str(problem.get("pack", ""))
        if pack.startswith("custom_nodes/") and pack[13:] in results:
            node = problem.get("node")
            results[pack[13:]]["problems"].append((f"{node}: " if node else "") + str(problem.get("message")))
    return results


# ---- the report ---------------------------------------------------------------------------------------------

def _first_error(problems: list[str]) -> str:
    """The problem that explains a shortfall: an import failure first, then node declaration errors."""
    failed = [p for p in problems if "failed to import" in p]
    nodes = [p for p in problems if not p.startswith("requirements.txt")]
    return (failed or nodes or [""])[0]


def table(reference: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    lines = [f"{'pack':34} {'ComfyUI':>7} {'sdgraph':>7}  exception"]
    total_ref = total_ours = 0
    for name in sorted(set(reference) | set(ours)):
        ref = reference.get(name, {"declared": 0, "error": "not loaded by ComfyUI"})
        got = ours.get(name, {"loaded": 0, "problems": []})
        total_ref += ref["declared"]
        total_ours += min(got["loaded"], ref["declared"]) if ref["declared"] else got["loaded"]
        why = _first_error(got["problems"]) if got["loaded"] < ref["declared"] else ""
        if ref["error"]:
            why = f"ComfyUI: {ref['error']}" + (f" | sdgraph: {why}" if why else "")
        lines.append(f"{name[:34]:34} {ref['declared']:7d} {got['loaded']:7d}  {why.splitlines()[0][:160] if why else ''}")
        absent = sorted(set(ref.get("names", [])) - set(got.get("names", [])))
        if absent and got["loaded"]:
            lines.append(f"{'':34} not in sdgraph: {', '.join(absent[:12])}" + (" ..." if len(absent) > 12 else ""))
    share = 100.0 * total_ours / total_ref if total_ref else 0.0
    lines.append(f"{'total':34} {total_ref:7d} {total_ours:7d}  {share:.1f}% of ComfyUI's")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--reference-child":
        _reference_child(*(Path(a) for a in argv[1:5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("custom_nodes", type=Path)
    parser.add_argument("--comfyui", type=Path, default=Path("/tmp/comfyui"))
    parser.add_argument("--json", type=Path, help="also write both sides' raw results here")
    parser.add_argument("--assume", default="", help="comma-separated top-level modules given permissive "
                        "stand-ins on sdgraph's side (a projection of what is left once they exist)")
    parser.add_argument("--scratch", type=Path, help="keep the copies and logs here (default: a temp dir)")
    parser.add_argument("--no-stand-in", action="store_true", help="no torchvision stand-in on sdgraph's side")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pack-report-") as tmp:
        scratch = Path(tmp) if args.scratch is None else args.scratch
        if args.scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir(parents=True)
        stand_in = scratch / "stand-in"
        stand_in.mkdir()
        if missing("torchvision"):
            write_stand_in(stand_in)
            print("stand-in: torchvision (not importable in this Python), on both sides")
        reference = reference_counts(args.comfyui, args.custom_nodes.resolve(), scratch, stand_in)
        assume = [name for name in args.assume.split(",") if name]
        ours = sdgraph_counts(args.custom_nodes.resolve(), scratch, None if args.no_stand_in else stand_in, assume)
        if args.json:
            args.json.write_text(json.dumps({"comfyui": reference, "sdgraph": ours}, indent=1))
    if assume:
        print(f"PROJECTION: sdgraph's side has permissive stand-ins for {', '.join(assume)}")
    print("\n".join(table(reference, ours)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
