"""ComfyUI's module names for plugins: `folder_paths`, `comfy.*`, `nodes`, `node_helpers`, `latent_preview`.

Packs written for ComfyUI import its modules by their top-level names. Those modules live in `toplevel/` (a plain
directory, not a subpackage of sdgraph), written by us against ComfyUI's public behaviour and built on sdgraph's
node API, directories and models. `activate` installs a finder (first on `sys.meta_path`) that answers for
exactly these top-level names from that directory, whatever `sys.path` holds; the plugin loader calls it just
before the first plugin loads, and never otherwise, so a process that loads no plugin never sees these names.
A finder rather than a `sys.path` entry because a source checkout's root is often put first on `sys.path` later
(`python -m` from it, pytest's rootdir), and its `nodes/` (sdgraph's built-in packs) would then shadow
ComfyUI's `nodes` for the packs. sdgraph's own code never imports these names: its built-in packs are
`sdgraph.nodes.*` (the distribution ships no top-level `nodes`), so the compatibility `nodes` cannot shadow
them either.

Once active the names stay importable, since packs import them lazily inside node functions too. A module that
already sits in `sys.modules` under one of these names but is not ours (a source checkout's `nodes/` imported as
a top-level package from the repository root, or a real ComfyUI in the same process) is taken out of the way
for the plugins, and the fact is recorded in `SHADOWED`.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path
from typing import Any

from sdgraph.comfy_layer import binding
from sdgraph.paths import Dirs

TOPLEVEL = Path(__file__).resolve().parent / "toplevel"
# the top-level names this layer answers for (each a module or package in TOPLEVEL)
NAMES = tuple(sorted(p.stem for p in TOPLEVEL.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()))
SHADOWED: dict[str, str] = {}  # name -> file of the foreign module taken out of sys.modules


def is_ours(module: object) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve().is_relative_to(TOPLEVEL)


def _evict_foreign() -> None:
    for key in list(sys.modules):
        top = key.partition(".")[0]
        if top in NAMES and not is_ours(sys.modules[key]):
            SHADOWED[key] = str(getattr(sys.modules[key], "__file__", None))
            del sys.modules[key]


class _Finder(importlib.abc.MetaPathFinder):
    """Finds exactly the layer's top-level names in TOPLEVEL (their submodules then load from the package)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in NAMES:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, [str(TOPLEVEL)])


FINDER = _Finder()


def activate(dirs: Dirs | None = None) -> None:
    """Make the names importable (idempotent) and answer for `dirs` from now on (None: keep the current ones)."""
    if dirs is not None:
        binding.bind_dirs(dirs)
        _make_io_dirs(dirs)
    if FINDER not in sys.meta_path:
        sys.meta_path.insert(0, FINDER)
    _evict_foreign()


def _make_io_dirs(dirs: Dirs) -> None:
    """ComfyUI's input/, output/ and temp/ always exist, and packs list them while declaring their nodes."""
    for directory in (dirs.input, dirs.output, dirs.temp):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # a read-only base: the pack that lists it reports its own error


def active() -> bool:
    return FINDER in sys.meta_path


def extension_web_dirs() -> dict[str, str]:
    """What packs wrote into the compatibility `nodes.EXTENSION_WEB_DIRS` (empty until `nodes` is imported)."""
    module = sys.modules.get("nodes")
    found = getattr(module, "EXTENSION_WEB_DIRS", None) if module is not None and is_ours(module) else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
