"""Importable stand-ins for ComfyUI names sdgraph has no equivalent for (model families it does not run, internals
of ComfyUI's own sampler). A pack importing them at load time loads; calling one, or instantiating one, raises a
NotImplementedError naming the name and the feature, so nothing runs with a silently wrong result.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable


def message(qualname: str, feature: str) -> str:
    return f"{qualname}: {feature} is not provided by sdgraph's ComfyUI compatibility layer"


def function(qualname: str, feature: str) -> Callable[..., Any]:
    def stand_in(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(message(qualname, feature))

    stand_in.__name__ = stand_in.__qualname__ = qualname.rpartition(".")[2]
    return stand_in


def cls(qualname: str, feature: str, base: type = object) -> type:
    """A class that can be subclassed (packs derive from these at import time) but not instantiated."""
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(message(f"{qualname} ({type(self).__name__})", feature))

    module, _, name = qualname.rpartition(".")
    return type(name, (base,), {"__init__": __init__, "__module__": module, "SDGRAPH_STAND_IN": feature})


def define(namespace: dict[str, Any], feature: str, names: Iterable[str]) -> None:
    """Put stand-ins for `names` into a module's namespace: capitalised names become classes, others functions."""
    module = namespace["__name__"]
    for name in names:
        qualname = f"{module}.{name}"
        is_class = name.lstrip("_")[:1].isupper()
        namespace[name] = cls(qualname, feature) if is_class else function(qualname, feature)
