"""Node packs: the built-in ones and plugins, from entry points (group `sdgraph.nodes`) and `custom_nodes/`.

A pack is a module exporting `NODES` (native `Node` classes) and/or `NODE_CLASS_MAPPINGS` (and optionally
`NODE_DISPLAY_NAME_MAPPINGS`), the ComfyUI convention, or else ComfyUI's V3 `comfy_entrypoint()` (async, giving a
`ComfyExtension` whose node list is registered by node_id). A pack that fails to import, or declares a broken node,
is recorded in `registry.problems` with its traceback and skipped; start-up never fails because of one.
Packs shipped by sdgraph itself load first, so a plugin can never silently replace a built-in node.

A `custom_nodes/` folder loads as ComfyUI loads it: each pack is a package (`sdgraph_custom_nodes.<folder>`, its
parent registered so relative imports of any depth work), its `__init__` runs, and what it prints goes to stderr
(never into a face's `--json` output). Before the first plugin loads, ComfyUI's module names (`folder_paths`,
`comfy.*`, `nodes`, ...) are made importable from sdgraph's compatibility layer, which is imported by name only
here: the engine itself never uses it.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import traceback
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from sdgraph.comfy_v3 import entrypoint_mappings
from sdgraph.pack_output import plugin_output_to_stderr
from sdgraph.pack_requirements import missing_requirements
from sdgraph.paths import Dirs
from sdgraph.registry import LoadProblem, Registry

GROUP = "sdgraph.nodes"
BUILTIN_DISTRIBUTION = "sdgraph"
PARENT_PACKAGE = "sdgraph_custom_nodes"
COMFY_LAYER = "sdgraph.comfy_layer"


def load_module_pack(registry: Registry, module: ModuleType, pack: str) -> None:
    """Register the nodes a module exports."""
    native = getattr(module, "NODES", None)
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if native is None and mappings is None and hasattr(module, "comfy_entrypoint"):
        try:  # ComfyUI's V3 convention: an (async) function returning a ComfyExtension
            with plugin_output_to_stderr():
                mappings = entrypoint_mappings(module.comfy_entrypoint)
        except Exception as exc:  # noqa: BLE001 - a plugin may raise anything
            registry.problems.append(LoadProblem(
                pack, f"comfy_entrypoint() failed: {type(exc).__name__}: {exc}",
                "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))))
            return
    if native is None and mappings is None:
        registry.problems.append(LoadProblem(pack, "exports neither NODES, NODE_CLASS_MAPPINGS nor comfy_entrypoint"))
        return
    if native is not None:
        registry.add_native(list(native), pack)
    if mappings is not None:
        if not isinstance(mappings, dict):
            registry.problems.append(LoadProblem(pack, "NODE_CLASS_MAPPINGS must be a dict"))
            return
        registry.add_comfy_mappings(mappings, getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None), pack)


def _import_failed(registry: Registry, pack: str, exc: BaseException) -> None:
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    hint = f" (module {missing!r} is missing)" if missing else ""
    registry.problems.append(LoadProblem(
        pack, f"failed to import: {type(exc).__name__}: {exc}{hint}",
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        missing_module=missing,
    ))


def activate_comfy_layer(dirs: Dirs | None) -> None:
    """Make ComfyUI's module names importable for the plugins about to load, bound to these directories."""
    importlib.import_module(COMFY_LAYER).activate(dirs)


def rebind_comfy_layer(dirs: Dirs) -> None:
    """Point ComfyUI's module names at a changed layout, where packs have made them live (else nothing)."""
    layer = sys.modules.get(COMFY_LAYER)
    if layer is not None and layer.active():
        layer.activate(dirs)


def load_entry_points(registry: Registry, *, builtin: bool, dirs: Dirs | None = None) -> None:
    """Load the packs declared under the entry-point group: sdgraph's own, or everyone else's."""
    chosen = [ep for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name)
              if ((ep.dist.name if ep.dist is not None else "") == BUILTIN_DISTRIBUTION) == builtin]
    if chosen and not builtin:
        activate_comfy_layer(dirs)
    for ep in chosen:
        pack = ep.name if builtin else f"{ep.dist.name if ep.dist is not None else ''}:{ep.name}"
        try:
            with plugin_output_to_stderr(enabled=not builtin):
                module = ep.load()
        except BaseException as exc:  # noqa: BLE001 - a plugin may raise anything, even SystemExit
            _import_failed(registry, pack, exc)
            continue
        if isinstance(module, ModuleType):
            load_module_pack(registry, module, pack)
        else:
            registry.problems.append(LoadProblem(pack, f"entry point {ep.value} is not a module"))


def load_custom_nodes(registry: Registry, directory: Path, dirs: Dirs | None = None) -> None:
    """Load each `.py` file and each package (folder with `__init__.py`) in a custom_nodes directory.

    `dirs` is the layout ComfyUI's module names (folder_paths, ...) answer for; by default the one whose base
    holds this custom_nodes directory, as ComfyUI's base path holds its custom_nodes/.
    """
    if not directory.is_dir():
        return
    packs = [path for path in sorted(directory.iterdir()) if not path.name.startswith((".", "_")) and (
        (path.is_file() and path.suffix == ".py") or (path.is_dir() and (path / "__init__.py").is_file()))]
    if not packs:
        return
    activate_comfy_layer(dirs or Dirs(base=directory.resolve().parent))
    parent = _parent_package(directory)
    for path in packs:
        _check_requirements(registry, path)
        if path.is_file():
            _load_path(registry, parent, path.stem, path)
        else:
            _load_path(registry, parent, path.name, path / "__init__.py", package_dir=path)
    _add_layer_web_dirs(registry)


def _parent_package(directory: Path) -> ModuleType:
    """The package every custom_nodes pack lives in, so `from .sub.mod import x` finds its ancestors."""
    parent = sys.modules.get(PARENT_PACKAGE)
    if parent is None:
        spec = importlib.machinery.ModuleSpec(PARENT_PACKAGE, None, is_package=True)
        spec.submodule_search_locations = []
        parent = importlib.util.module_from_spec(spec)
        sys.modules[PARENT_PACKAGE] = parent
    parent.__path__[:] = [str(directory.resolve())]
    return parent


def _module_name(name: str) -> str:
    return f"{PARENT_PACKAGE}.{name.replace('.', '_x_')}"  # a dot in a folder name would read as a subpackage


def _forget(module_name: str) -> None:
    """Drop a pack's modules from an earlier load (another directory may hold a pack of the same name)."""
    for key in [k for k in sys.modules if k == module_name or k.startswith(module_name + ".")]:
        del sys.modules[key]


def _load_path(registry: Registry, parent: ModuleType, name: str, file: Path,
               package_dir: Path | None = None) -> None:
    pack = f"custom_nodes/{name}"
    module_name = _module_name(name)
    _forget(module_name)
    try:
        spec = importlib.util.spec_from_file_location(
            module_name, file, submodule_search_locations=[str(package_dir)] if package_dir else None)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        with plugin_output_to_stderr():
            spec.loader.exec_module(module)
        setattr(parent, module_name.rpartition(".")[2], module)
    except BaseException as exc:  # noqa: BLE001
        _forget(module_name)
        _import_failed(registry, pack, exc)
        return
    load_module_pack(registry, module, pack)
    _add_web_dir(registry, name, module, package_dir or file.parent)


def _add_web_dir(registry: Registry, name: str, module: ModuleType, module_dir: Path) -> None:
    """A pack's WEB_DIRECTORY (relative to its folder; a one-file pack's is custom_nodes/ itself), if it is one."""
    web_dir = getattr(module, "WEB_DIRECTORY", None)
    if not isinstance(web_dir, (str, Path)):
        return
    path = (module_dir / web_dir).resolve()
    if path.is_dir():  # a missing one is ignored, as ComfyUI ignores it
        registry.web_dirs[name] = path


def _add_layer_web_dirs(registry: Registry) -> None:
    """Web folders packs put straight into ComfyUI's `nodes.EXTENSION_WEB_DIRS` (Impact Pack does)."""
    for name, path in importlib.import_module(COMFY_LAYER).extension_web_dirs().items():
        if name not in registry.web_dirs and Path(path).is_dir():
            registry.web_dirs[name] = Path(path).resolve()


def _check_requirements(registry: Registry, path: Path) -> None:
    """Report what a pack's requirements.txt asks for and this environment lacks; nothing is ever installed."""
    requirements = path / "requirements.txt"
    if path.is_dir() and requirements.is_file():
        for name, line, why in missing_requirements(requirements):
            registry.problems.append(LoadProblem(
                f"custom_nodes/{path.name}",
                f"requirements.txt: {line!r} {why}; sdgraph never installs a pack's requirements "
                f"(install them yourself: pip install -r {requirements})",
                missing_module=name))


def build_registry(custom_nodes: Path | None = None, *, plugins: bool = True, dirs: Dirs | None = None) -> Registry:
    """The registry a face starts with: built-in packs, then installed plugins, then custom_nodes/."""
    registry = Registry()
    load_entry_points(registry, builtin=True)
    if plugins:
        load_entry_points(registry, builtin=False, dirs=dirs)
        if custom_nodes is not None:
            load_custom_nodes(registry, custom_nodes, dirs)
    return registry
