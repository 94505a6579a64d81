"""Node packs: the built-in ones and plugins, from entry points (group `sdgraph.nodes`) and `custom_nodes/`.

A pack is a module exporting `NODES` (native `Node` classes) and/or `NODE_CLASS_MAPPINGS` (and optionally
`NODE_DISPLAY_NAME_MAPPINGS`), the ComfyUI convention. A pack that fails to import, or declares a broken node,
is recorded in `registry.problems` with its traceback and skipped; start-up never fails because of one.
Packs shipped by sdgraph itself load first, so a plugin can never silently replace a built-in node.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from sdgraph.registry import LoadProblem, Registry

GROUP = "sdgraph.nodes"
BUILTIN_DISTRIBUTION = "sdgraph"


def load_module_pack(registry: Registry, module: ModuleType, pack: str) -> None:
    """Register the nodes a module exports."""
    native = getattr(module, "NODES", None)
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if native is None and mappings is None:
        registry.problems.append(LoadProblem(pack, "exports neither NODES nor NODE_CLASS_MAPPINGS"))
        return
    if native is not None:
        registry.add_native(list(native), pack)
    if mappings is not None:
        if not isinstance(mappings, dict):
            registry.problems.append(LoadProblem(pack, "NODE_CLASS_MAPPINGS must be a dict"))
            return
        registry.add_comfy_mappings(mappings, getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None), pack)


def _import_failed(registry: Registry, pack: str, exc: BaseException) -> None:
    registry.problems.append(LoadProblem(
        pack, f"failed to import: {type(exc).__name__}: {exc}",
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    ))


def load_entry_points(registry: Registry, *, builtin: bool) -> None:
    """Load the packs declared under the entry-point group: sdgraph's own, or everyone else's."""
    for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name):
        dist = ep.dist.name if ep.dist is not None else ""
        if (dist == BUILTIN_DISTRIBUTION) != builtin:
            continue
        pack = ep.name if builtin else f"{dist}:{ep.name}"
        try:
            module = ep.load()
        except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
            _import_failed(registry, pack, exc)
            continue
        if isinstance(module, ModuleType):
            load_module_pack(registry, module, pack)
        else:
            registry.problems.append(LoadProblem(pack, f"entry point {ep.value} is not a module"))


def load_custom_nodes(registry: Registry, directory: Path) -> None:
    """Load each `.py` file and each package (folder with `__init__.py`) in a custom_nodes directory."""
    if not directory.is_dir():
        return
    for path in sorted(directory.iterdir()):
        if path.name.startswith((".", "_")):
            continue
        if path.is_file() and path.suffix == ".py":
            _load_path(registry, path.stem, path)
        elif path.is_dir() and (path / "__init__.py").is_file():
            _load_path(registry, path.name, path / "__init__.py", package_dir=path)


def _load_path(registry: Registry, name: str, file: Path, package_dir: Path | None = None) -> None:
    pack = f"custom_nodes/{name}"
    module_name = f"sdgraph_custom_nodes.{name}"
    try:
        spec = importlib.util.spec_from_file_location(
            module_name, file, submodule_search_locations=[str(package_dir)] if package_dir else None)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001
        sys.modules.pop(module_name, None)
        _import_failed(registry, pack, exc)
        return
    load_module_pack(registry, module, pack)


def build_registry(custom_nodes: Path | None = None, *, plugins: bool = True) -> Registry:
    """The registry a face starts with: built-in packs, then installed plugins, then custom_nodes/."""
    registry = Registry()
    load_entry_points(registry, builtin=True)
    if plugins:
        load_entry_points(registry, builtin=False)
        if custom_nodes is not None:
            load_custom_nodes(registry, custom_nodes)
    return registry
