"""What a running node may use from the engine: progress, interrupt, directories, the model manager.

A node never reaches into the executor or the server; everything it needs arrives through `NodeContext`.
"""
from __future__ import annotations

import contextlib
import threading
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterator

from sdgraph.limits import Limits, current_limits
from sdgraph.paths import Dirs


class Interrupted(Exception):
    """Raised inside a run when an interrupt was requested; the executor reports it as an interruption."""


class InterruptFlag:
    """A thread-safe interrupt request, checked between nodes and at every progress tick.

    A flag with a `parent` is set also while its parent is: one prompt of a group can be interrupted alone, and
    interrupting the executor reaches every prompt it runs.
    """

    def __init__(self, parent: "InterruptFlag | None" = None) -> None:
        self._event = threading.Event()
        self.parent = parent

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set() or (self.parent is not None and self.parent.is_set())

    def check(self) -> None:
        if self._event.is_set() or (self.parent is not None and self.parent.is_set()):
            raise Interrupted("interrupted")


ProgressSink = Callable[[int, int, Any], None]


@dataclass
class Services:
    """Long-lived things shared by every run: directories, the model manager, user settings."""

    dirs: Dirs = field(default_factory=Dirs)
    models: Any = None  # sdgraph.models.ModelManager once torch is in play; None for pure-Python use
    settings: dict[str, Any] = field(default_factory=dict)
    limits: Limits = field(default_factory=current_limits)  # resource budgets checked before allocating

    def prompt_scope(self) -> ContextManager[Any]:
        """The model manager's scope for one prompt (models it uses are not dropped meanwhile), if it has one."""
        scope = getattr(self.models, "prompt_scope", None)
        return scope() if callable(scope) else contextlib.nullcontext()


@dataclass
class NodeContext:
    """Handed to each node as `self.ctx` for the duration of one call."""

    node_id: str
    prompt_id: str
    services: Services
    interrupt: InterruptFlag
    extra_data: dict[str, Any] = field(default_factory=dict)
    on_progress: ProgressSink | None = None
    prompt_source: Callable[[], dict[str, Any]] | None = None
    instances: dict[str, Any] | None = None  # node id -> its class's instance, kept by the executor
    dynprompt: Any = None  # the run's graph as it grows (`sdgraph.expansion.DynamicPrompt`), for DYNPROMPT

    @property
    def prompt(self) -> dict[str, Any]:
        """The API-format workflow being run (for embedding in saved images)."""
        return self.prompt_source() if self.prompt_source is not None else {}

    @property
    def dirs(self) -> Dirs:
        return self.services.dirs

    @property
    def models(self) -> Any:
        return self.services.models

    @property
    def limits(self) -> Limits:
        return self.services.limits

    def progress(self, value: int, total: int, preview: Any = None) -> None:
        """Report step `value` of `total` (and optionally a preview image); stops here if interrupted."""
        self.interrupt.check()
        if self.on_progress is not None:
            self.on_progress(value, total, preview)

    def check_interrupt(self) -> None:
        self.interrupt.check()

    def instance(self, cls: type) -> Any:
        """The node's instance of `cls`: one per node id, reused across calls and runs as the ecosystem does
        (a lazy check and the call it precedes see the same object)."""
        if self.instances is None:
            return cls()
        found = self.instances.get(self.node_id)
        if type(found) is not cls:
            found = self.instances[self.node_id] = cls()
        return found

# The context of the node call in progress, for code that cannot be handed one: ComfyUI-convention node classes
# reach progress and interrupt through module functions (comfy.utils.ProgressBar, ...), not through `self.ctx`.
_CURRENT: ContextVar[NodeContext | None] = ContextVar("sdgraph_node_context", default=None)
_latest: list[NodeContext] = []  # innermost call in progress, seen from threads a node starts (no ContextVar there)


def current_node_context() -> NodeContext | None:
    """The context of the node call in progress in this thread or task, else of the latest one still running."""
    found = _CURRENT.get()
    if found is None and _latest:
        return _latest[-1]
    return found


@contextlib.contextmanager
def node_context_bound(ctx: NodeContext) -> Iterator[NodeContext]:
    """Make ctx the current node context for the duration of a call."""
    token = _CURRENT.set(ctx)
    _latest.append(ctx)
    try:
        yield ctx
    finally:
        _latest.remove(ctx)
        _CURRENT.reset(token)
