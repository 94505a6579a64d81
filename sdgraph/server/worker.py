"""The worker thread: take the next prompt, have the executor prepare and run it, record its history.

The executor owns the prompt's lifecycle; the worker hands its events to the WebSocket hub (thread-safely),
gives it the recorder that writes the history, and survives anything a prompt does: a node's exception, an
out-of-memory error, even an engine bug.
Requests to unload models or free memory are carried out between prompts, never under a running one.
"""
from __future__ import annotations

import gc
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from sdgraph.collector import collector_paused
from sdgraph.execute import Executor, Member, RunResult, error_payload
from sdgraph.server.queue import PromptStore, QueueItem
from sdgraph.server.ws import Hub, preview_frame, text_frame

log = logging.getLogger("sdgraph.server")

POLL_SECONDS = 0.2
SCAN_FACTOR = 4  # pending prompts looked at for a group: this many times the largest group


@dataclass
class _Member(Member):
    item: QueueItem = None  # type: ignore[assignment] - always given


class Worker:
    def __init__(self, name: str, executor: Executor, store: PromptStore, hub: Hub) -> None:
        self.name = name
        self.executor = executor
        self.store = store
        self.hub = hub
        self.current: QueueItem | None = None
        self.running: list[str] = []  # the prompts of the group in progress
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
        if self._thread.ident is not None:  # a server that never listened never started it
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def interrupt(self, prompt_id: str | None = None) -> bool:
        """Interrupt the running prompts (only `prompt_id`, when given). The store knows a prompt is running
        from the moment it is taken, before the executor starts on it; the interrupt holds until that run ends."""
        running = [item.prompt_id for item in self.store.snapshot()[0]]
        if not running or (prompt_id is not None and prompt_id not in running):
            return False
        self.executor.interrupt(prompt_id if len(running) > 1 else None)
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
                item = self.store.take(timeout=POLL_SECONDS, worker=self.name)
                if item is None:
                    continue
                self.current = item
                taken = [item]
                try:
                    with collector_paused():
                        group = self._group(item)
                    taken = [member.item for member in group]
                    self.running = [member.prompt_id for member in group]
                    self._run(group)
                except BaseException as exc:
                    for each in taken:
                        self._abandon(each, exc)
                    raise
                finally:
                    self.current = None
                    self.running = []
            except BaseException:  # noqa: BLE001 - the worker outlives every prompt
                log.exception("worker %s: unexpected failure; continuing", self.name)

    def _abandon(self, item: QueueItem, exc: BaseException) -> None:
        """A failure outside the executor's care still ends the prompt, so it cannot stay running forever."""
        if self.store.is_running(item.prompt_id):
            result = RunResult(item.prompt_id, "error", error=error_payload(item.prompt_id, exc))
            result.messages = [["execution_error", result.error]]
            try:
                self.store.finish(item.prompt_id, history_entry(result))
            finally:
                self.hub.post(text_frame("execution_error", result.error), item.client_id)
                self.hub.post(text_frame("executing", {"node": None, "display_node": None,
                                                       "prompt_id": item.prompt_id}), item.client_id)

    def _group(self, item: QueueItem) -> list[_Member]:
        """The taken prompt, and pending ones that can run with it as one group (same models; see
        `Executor.batch_key`), taken too. Prepared again here: files and nodes may have changed meanwhile."""
        first = self._member(item, self.executor.prepare(item.prompt))
        key = self.executor.batch_key(first.prompt)
        if key is None:
            return [first]
        chosen: dict[str, _Member] = {}
        for candidate in self.store.peek_pending(self.executor.batch_max * SCAN_FACTOR):
            prepared = self.executor.prepare(candidate.prompt)
            if self.executor.batch_key(prepared) == key:
                chosen[candidate.prompt_id] = self._member(candidate, prepared)
                if len(chosen) + 1 >= self.executor.batch_max:
                    break
        return [first] + [chosen[taken.prompt_id] for taken in self.store.claim(list(chosen), worker=self.name)]

    def _member(self, item: QueueItem, prompt: Any) -> _Member:
        return _Member(prompt, item.prompt_id, self._listener(item.client_id), item.extra_data,
                       self._recorder(item), item=item)

    def _run(self, group: list[_Member]) -> None:
        # Paused from preparing until the prompt is freed (nodes still run with the collector): otherwise full
        # collections walk a large prompt, holding the GIL for a third of a second each.
        with collector_paused():
            results = self.executor.execute_group(group)
            for member in group:
                member.prompt.release()
        self.completed += len(group)
        self.hub.post_status()
        if any(r.status == "error" and _out_of_memory(r.error or {}) for r in results):
            log.warning("worker %s: out of memory in prompts %s; freeing memory", self.name,
                        [m.prompt_id for m in group])
            self.request_free(unload_models=True, free_memory=False)

    def _listener(self, sid: str | None) -> Callable[[str, dict[str, Any]], None]:
        def listener(event: str, data: dict[str, Any]) -> None:
            try:
                post_event(self.hub, event, data, sid)
            except Exception:  # noqa: BLE001 - presenting an event must never break the run
                log.exception("worker %s: could not send %s", self.name, event)
        return listener

    def _recorder(self, item: QueueItem) -> Callable[[RunResult], None]:
        def record(result: RunResult) -> None:
            if self._stopping.is_set() and result.status == "interrupted":
                self.store.requeue(item.prompt_id)  # cut short by the stop: it runs again after a restart
            else:
                self.store.finish(item.prompt_id, history_entry(result))
        return record

    def _housekeeping(self) -> None:
        with self._free_lock:
            request = dict(self._free_request)
            self._free_request = {"unload_models": False, "free_memory": False}
        free_executor(self.executor, request)


def free_executor(executor: Executor, request: dict[str, bool]) -> None:
    """Carry out a request to unload models and/or free memory (between prompts, never under a running one)."""
    if not (request["unload_models"] or request["free_memory"]):
        return
    models = executor.services.models
    if models is not None:
        _call_first(models, ("unload_all", "unload_models", "unload"))
    if request["free_memory"]:
        executor.cache.clear()
        if models is not None:
            _call_first(models, ("free_memory", "free", "empty_cache"))
    gc.collect()


def post_event(hub: Hub, event: str, data: dict[str, Any], sid: str | None) -> None:
    """An executor event as the WebSocket frame the protocol sends for it (a preview: a binary frame)."""
    if event == "preview":
        frame = preview_frame(data.get("image"))
        if frame is not None:
            hub.post(frame, sid)
        return
    hub.post(text_frame(event, data), sid)


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


def history_entry(result: RunResult) -> dict[str, Any]:
    """What the history keeps of a run besides the prompt itself."""
    ok = result.status == "success"
    return {
        "outputs": result.outputs,
        "status": {"status_str": "success" if ok else "error", "completed": ok, "messages": result.messages},
        "meta": {node: {"node_id": node, "display_node": node, "parent_node": None, "real_node_id": node}
                 for node in result.outputs},
    }
