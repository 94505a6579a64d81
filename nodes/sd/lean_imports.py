"""Import one diffusers or transformers module without every sibling its package's `__init__` imports.

Python runs each parent package's `__init__` before a submodule. Some of diffusers' and transformers'
`__init__` files are eager: `diffusers.models.unets` imports every UNet diffusers has, `.autoencoders` every
autoencoder, `.transformers` every transformer model (and, through them, LoRA loaders and more);
`transformers.models` indexes all of its ~450 model folders. The packages in `DEFERRED` are therefore created
unrun when first imported: a module with the package's real path, so its submodules import as usual, whose
`__init__` code runs the first time anything asks it for a name it would define (`from diffusers.models.unets
import UNet2DModel`, `dir()`), so code that uses the package whole, a plugin's say, sees it complete.

`install()` puts the finder first on `sys.meta_path`; it imports nothing, and touches only the names in
`DEFERRED`, and only while they are not imported yet.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
import weakref
from typing import Any, Sequence

DEFERRED = frozenset({
    "diffusers.models.unets", "diffusers.models.autoencoders", "diffusers.models.transformers",
    "diffusers.models.controlnets", "transformers.models",
})
_completing = threading.RLock()
_started: weakref.WeakSet[types.ModuleType] = weakref.WeakSet()


class DeferredPackage(types.ModuleType):
    """A package whose `__init__` runs on the first look-up of a name it does not hold yet."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # import machinery probing (__path__, __wrapped__ ...): no reason to run
        complete(self)
        if type(self) is DeferredPackage:  # its `__init__` is running in this thread and has not set it yet
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return getattr(self, name)

    def __dir__(self) -> list[str]:
        complete(self)
        if type(self) is DeferredPackage:  # asked while its `__init__` runs
            return sorted(self.__dict__)
        return type(self).__dir__(self)  # the completed module's own (a lazy module lists its lazy names)


def complete(module: types.ModuleType) -> None:
    """Run the package's own `__init__` in it, once; other threads wait until it has run."""
    with _completing:
        if not isinstance(module, DeferredPackage) or module in _started:
            return
        _started.add(module)
        loader = module.__spec__.loader.real  # type: ignore[union-attr]
        module.__loader__ = module.__spec__.loader = loader  # type: ignore[union-attr]
        exec(loader.get_code(module.__name__), module.__dict__)
        module.__class__ = types.ModuleType  # an ordinary module from here on
        _adopt_replacement(module)


def _adopt_replacement(module: types.ModuleType) -> None:
    """An `__init__` that ends by putting a lazy module in its place (transformers' do) is followed."""
    replacement = sys.modules.get(module.__name__)
    if replacement is None or replacement is module:
        return
    module.__class__ = type(replacement)
    own = module.__dict__
    own.update({k: v for k, v in replacement.__dict__.items() if not (k.startswith("__") and k in own)})
    sys.modules[module.__name__] = module


class _DeferringLoader(importlib.abc.Loader):
    def __init__(self, real: importlib.abc.Loader) -> None:
        self.real = real

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return DeferredPackage(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass  # the package's code runs in `complete`


class DeferringFinder(importlib.abc.MetaPathFinder):
    """Finds the packages named in `names` as `DeferredPackage`s, and nothing else."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, name: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if name not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.submodule_search_locations is None or not hasattr(spec.loader, "get_code"):
            return None
        spec.loader = _DeferringLoader(spec.loader)
        return spec


_FINDER = DeferringFinder(DEFERRED)


def install() -> None:
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
