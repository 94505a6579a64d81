"""What running a prompt gives back: the result, a node's failure, and the `execution_error` payload."""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any


class NodeError(Exception):
    """A node's own failure, carrying which node it was."""

    def __init__(self, node_id: str, class_type: str, cause: BaseException, ephemeral: str | None = None) -> None:
        where = f"node {node_id} ({class_type})" + (f", expanded node {ephemeral}" if ephemeral else "")
        super().__init__(f"{where}: {type(cause).__name__}: {cause}")
        self.node_id = node_id  # the prompt's own node (the one an expanded node stands in for)
        self.class_type = class_type
        self.cause = cause
        self.ephemeral = ephemeral


@dataclass
class RunResult:
    prompt_id: str
    status: str  # "success", "error", "interrupted" or "invalid"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)  # the HISTORY_EVENTS this run emitted
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"


def error_payload(prompt_id: str, exc: BaseException | None = None, *, node_id: str | None = None,
                  node_type: str | None = None, executed: list[str] | None = None, message: str | None = None,
                  exception_type: str | None = None, current_inputs: dict[str, Any] | None = None,
                  current_outputs: list[str] | None = None,
                  node_errors: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one builder of `execution_error` payloads (the ecosystem's fields), for every way a run can fail."""
    payload = {
        "prompt_id": prompt_id,
        "node_id": node_id,
        "node_type": node_type,
        "executed": list(executed or []),
        "exception_message": message if message is not None else str(exc),
        "exception_type": exception_type or (_qualified_name(type(exc)) if exc is not None else "error"),
        "traceback": traceback.format_exception(type(exc), exc, exc.__traceback__) if exc is not None else [],
        "current_inputs": current_inputs or {},
        "current_outputs": list(current_outputs or []),
        "timestamp": _now_ms(),
    }
    if node_errors:
        payload["node_errors"] = node_errors
    return payload


def _qualified_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")


def _now_ms() -> int:
    return int(time.time() * 1000)
