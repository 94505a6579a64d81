"""One worker thread per device: take the next prompt, run it on that device's executor, record the history.

The executor does the running; the worker only hands its events to the WebSocket hub (thread-safely), stores
the outcome, and survives anything a prompt does: a node's exception, an out-of-memory error, even an engine bug.
Requests to unload models or free memory are carried out between prompts, never under a running one.
"""
from __future__ import annotations

import gc
import logging
import threading
import traceback
from typing import Any

from sdgraph.execute import Executor, RunResult
from sdgraph.server.queue import PromptStore, QueueItem
from sdgraph.server.ws import Hub, preview_frame, text_frame

log = logging.getLogger("sdgraph.server")

HISTORY_EVENTS = frozenset({"execution_start", "execution_cached", "execution_success", "execution_error",
                            "execution_interrupted"})
POLL_SECONDS = 0.2


class Worker:
    def __init__(self, name: str, executor: Executor, store: PromptStore, hub: Hub) -> None:
        self.name = name
        self.executor = executor
        self.store = store
        self.hub = hub
        self.current: QueueItem | None = None
        self.completed = 0
        self._stopping = threading.Event()
        self._free_lock = threading.Lock()
        self._free_request = {"unload_models": False, "free_memory": False}
        self._thread = threading.Thread(target=self._loop, name=f"sdgraph-worker-{name}", daemon=True)

    # ---- control (any thread) ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current prompt; a prompt cut short by the stop goes back to the queue."""
        self._stopping.set()
        self.store.close()
        if self.current is not None:
            self.executor.interrupt()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def interrupt(self, prompt_id: str | None = None) -> bool:
        current = self.current
        if current is None or (prompt_id is not None and current.prompt_id != prompt_id):
            return False
        self.executor.interrupt()
        return True

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        with self._free_lock:
            self._free_request["unload_models"] |= unload_models
            self._free_request["free_memory"] |= free_memory

    # ---- the thread -------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._housekeeping()
                item = self.store.take(timeout=POLL_SECONDS)
                if item is None:
                    continue
                self.current = item
                try:
                    self._run(item)
                finally:
                    self.current = None
            except BaseException:  # noqa: BLE001 - the worker outlives every prompt
                log.exception("worker %s: unexpected failure; continuing", self.name)

    def _run(self, item: QueueItem) -> None:
        sid = item.client_id
        messages: list[list[Any]] = []

        def listener(event: str, data: dict[str, Any]) -> None:
            try:
                if event == "preview":
                    frame = preview_frame(data.get("image"))
                    if frame is not None:
                        self.hub.post(frame, sid)
                    return
                if event in HISTORY_EVENTS:
                    messages.append([event, data])
                self.hub.post(text_frame(event, data), sid)
            except Exception:  # noqa: BLE001 - presenting an event must never break the run
                log.exception("worker %s: could not send %s", self.name, event)

        closed_by_executor = True  # the executor ends every run it starts with "executing": null
        try:
            result = self.executor.run(item.workflow or item.prompt, prompt_id=item.prompt_id,
                                       listener=listener, extra_data=item.extra_data, report=item.report)
        except BaseException as exc:  # noqa: BLE001 - an engine failure becomes this prompt's error
            result = _engine_failure(item.prompt_id, exc)
            listener("execution_error", result.error or {})
            closed_by_executor = False
        item.workflow = item.report = None
        if result.status == "invalid":
            listener("execution_error", _invalid_error(item.prompt_id, result))
            closed_by_executor = False
        if not closed_by_executor:
            listener("executing", {"node": None, "display_node": None, "prompt_id": item.prompt_id})
        if self._stopping.is_set() and result.status == "interrupted":
            self.store.requeue(item.prompt_id)
            return
        self.store.finish(item.prompt_id, _history_result(result, messages))
        self.completed += 1
        self.hub.post_status()
        if result.status == "error" and _out_of_memory(result.error or {}):
            log.warning("worker %s: out of memory in prompt %s; freeing memory", self.name, item.prompt_id)
            self.request_free(unload_models=True, free_memory=False)

    def _housekeeping(self) -> None:
        with self._free_lock:
            request = dict(self._free_request)
            self._free_request = {"unload_models": False, "free_memory": False}
        if not (request["unload_models"] or request["free_memory"]):
            return
        models = self.executor.services.models
        if models is not None:
            _call_first(models, ("unload_all", "unload_models", "unload"))
        if request["free_memory"]:
            self.executor.cache.clear()
            if models is not None:
                _call_first(models, ("free_memory", "free", "empty_cache"))
        gc.collect()


def _call_first(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        method = getattr(obj, name, None)
        if callable(method):
            try:
                method()
            except Exception:  # noqa: BLE001
                log.exception("model manager %s() failed", name)
            return


def _out_of_memory(error: dict[str, Any]) -> bool:
    kind = str(error.get("exception_type", ""))
    message = str(error.get("exception_message", "")).lower()
    return kind.endswith(("MemoryError", "OutOfMemoryError")) or "out of memory" in message


def _engine_failure(prompt_id: str, exc: BaseException) -> RunResult:
    log.error("engine failure in prompt %s", prompt_id, exc_info=exc)
    return RunResult(prompt_id, "error", error={
        "prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
        "exception_message": str(exc),
        "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
        "traceback": traceback.format_exception(type(exc), exc, exc.__traceback__),
        "current_inputs": {}, "current_outputs": [],
    })


def _invalid_error(prompt_id: str, result: RunResult) -> dict[str, Any]:
    error = result.error or {}
    report = result.validation
    return {
        "prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
        "exception_message": f"{error.get('message', 'invalid prompt')}: {error.get('details', '')}".rstrip(": "),
        "exception_type": str(error.get("type", "prompt_validation_failed")),
        "traceback": [], "current_inputs": {}, "current_outputs": [],
        "node_errors": report.node_errors if report is not None else {},
    }


def _history_result(result: RunResult, messages: list[list[Any]]) -> dict[str, Any]:
    ok = result.status == "success"
    return {
        "outputs": result.outputs,
        "status": {"status_str": "success" if ok else "error", "completed": ok, "messages": messages},
        "meta": {node: {"node_id": node, "display_node": node, "parent_node": None, "real_node_id": node}
                 for node in result.outputs},
    }
