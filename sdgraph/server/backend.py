"""The worker backend interface: what the server asks of whatever runs its queued prompts.

Three backends implement it, each over the same executor and the same SQLite queue (`PromptStore`):
- in-process (`sdgraph.server.worker.Worker`): one thread in the server's process, the default;
- subprocess (`sdgraph.server.pool` over `sdgraph.server.child`): executors in child processes, so a crash kills
  only a child, which is restarted;
- Ray actors (`sdgraph.server.ray_backend`): executors in actors of a local or remote Ray cluster.
The server only starts, stops, interrupts, asks to free memory and lists workers; the WebSocket protocol and
the queue are the same whichever backend runs.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Protocol, runtime_checkable

from sdgraph.execute import Executor
from sdgraph.server.queue import PromptStore
from sdgraph.server.ws import Hub


@runtime_checkable
class WorkerBackend(Protocol):
    def start(self) -> None:
        """Begin taking prompts from the store (called once the server listens)."""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking prompts; a prompt cut short by the stop goes back to the queue."""

    @property
    def alive(self) -> bool:
        """Whether it has been started and still takes prompts."""

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompt `prompt_id` (every running one when None); whether one was."""

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        """Unload models / free memory between prompts, never under a running one."""


class WorkerLost(RuntimeError):
    """A remote worker (child process, actor) running a prompt is gone; the message says how."""


# Builds the backend for a server: (executor, store, hub) -> backend. `create_app` takes one.
BackendFactory = Callable[[Executor, PromptStore, Hub], WorkerBackend]


def describe_workers(backend: Any) -> list[dict[str, Any]]:
    """Every worker of a backend, for /system_stats: name, kind, state, the prompt it runs, queue depth, loaded
    models. A backend may describe itself (`describe()`); the in-process worker is described from outside."""
    describe = getattr(backend, "describe", None)
    if callable(describe):
        return describe()
    current = getattr(backend, "current", None)
    executor = getattr(backend, "executor", None)
    return [{
        "name": str(getattr(backend, "name", "0")), "kind": "in-process", "pid": os.getpid(),
        "alive": bool(getattr(backend, "alive", False)), "state": "running" if current is not None else "idle",
        "prompt_id": getattr(current, "prompt_id", None), "queue_depth": 1 if current is not None else 0,
        "completed": int(getattr(backend, "completed", 0)), "restarts": 0,
        "loaded_models": resident_models(executor), "device": device_of(executor),
    }]


def resident_models(executor: Executor | None) -> list[str]:
    """Names of the models an executor's model manager holds, where it can tell."""
    models = getattr(getattr(executor, "services", None), "models", None)
    resident = getattr(models, "resident", None)
    if not callable(resident):
        return []
    try:
        return sorted({str(getattr(slot, "name", slot)) for slot in resident()})
    except Exception:  # noqa: BLE001 - stats must never fail for a model manager's sake
        return []


def device_of(executor: Executor | None) -> str:
    models = getattr(getattr(executor, "services", None), "models", None)
    try:
        return str(models.compute_device) if models is not None else "cpu"
    except Exception:  # noqa: BLE001
        return "unknown"
