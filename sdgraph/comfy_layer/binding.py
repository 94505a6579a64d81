"""What the ComfyUI-named modules answer for: the directory layout, and the node call in progress.

ComfyUI keeps this in module globals of one server process. Here the layout is the one the latest plugin load
was bound to (`bind_dirs`), and everything about "the current run" (progress, interrupt, the model manager)
comes from the context of the node call in progress (`sdgraph.context.current_node_context`), which the
executor sets for every ComfyUI-convention node.
"""
from __future__ import annotations

from typing import Any, Callable

from sdgraph.context import InterruptFlag, NodeContext, Services, current_node_context
from sdgraph.paths import Dirs

_state: dict[str, Any] = {"dirs": None, "last_context": None}
_on_rebind: list[Callable[[Dirs], None]] = []
IDLE_INTERRUPT = InterruptFlag()  # what interrupt calls act on when no node call has been seen yet


def bind_dirs(dirs: Dirs) -> None:
    _state["dirs"] = dirs
    for listener in list(_on_rebind):
        listener(dirs)


def on_rebind(listener: Callable[[Dirs], None]) -> None:
    """Call listener with the new layout whenever the layer is bound to another one (folder_paths rebuilds)."""
    _on_rebind.append(listener)


def dirs() -> Dirs:
    if _state["dirs"] is None:
        _state["dirs"] = Dirs()
    return _state["dirs"]


def context() -> NodeContext | None:
    """The node call in progress (remembered, so that calls made after it still reach the same run's flag)."""
    ctx = current_node_context()
    if ctx is not None:
        _state["last_context"] = ctx
    return ctx


def recent_context() -> NodeContext | None:
    """The node call in progress, else the latest one seen (ComfyUI keeps "the current prompt" until the next)."""
    return context() or _state["last_context"]


def services() -> Services:
    ctx = recent_context()
    return ctx.services if ctx is not None else Services(dirs=dirs())


def interrupt_flag() -> InterruptFlag:
    ctx = recent_context()
    return ctx.interrupt if ctx is not None else IDLE_INTERRUPT


def model_manager() -> Any:
    """The model manager of the run in progress (one is made the first time none is set, as nodes do)."""
    from sdgraph.models import ModelManager  # noqa: PLC0415 - torch lives from here down

    current = services()
    if current.models is None:
        current.models = ModelManager()
    return current.models
