"""ComfyUI's `comfy` package for plugins, answered by sdgraph (see sdgraph/comfy_layer/__init__.py).

ComfyUI has imported most of its submodules by the time packs load, so packs often `import comfy` and then
use `comfy.samplers.KSampler`; a submodule is imported here the first time it is used as an attribute.
A name that is no submodule of the layer raises AttributeError, and a pack importing a missing submodule
fails to load with that module named.
"""
from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{name}":
            raise AttributeError(f"module 'comfy' has no attribute {name!r} (no module comfy.{name} in "
                                 "sdgraph's ComfyUI layer)") from None
        raise
