"""A worker backend over remote executors (child processes or Ray actors): one server thread per worker.

Each worker's thread takes a prompt from the store under its own lease (routed by `sdgraph.server.routing`),
sends it to its executor through a channel (`sdgraph.server.child.SubprocessChannel`,
`sdgraph.server.ray_backend.RayChannel`) and posts what streams back to the submitting WebSocket client, in
order; the files its save nodes wrote arrive before the event naming them and are stored in the server's output and
temp directories (`sdgraph.server.outputs`), under the names the events and the history then carry; the history
entry is written before the run's closing `executing: null` goes out, as in-process. When the
channel reports the worker lost, the store requeues the prompt once or fails it (`PromptStore.lost`), and a new
worker is started in its place; the other workers go on.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

from sdgraph.execute import RunResult, error_payload
from sdgraph.server.backend import WorkerLost
from sdgraph.server.outputs import OutputStore
from sdgraph.server.queue import PromptStore, QueueItem
from sdgraph.server.routing import Router
from sdgraph.server.worker import history_entry, post_event
from sdgraph.server.ws import Hub, text_frame

log = logging.getLogger("sdgraph.server")

POLL_SECONDS = 0.2
RESTART_PAUSE_S = 1.0  # between failed starts of a worker


class Channel(Protocol):
    name: str
    kind: str
    hello: dict[str, Any]

    @property
    def alive(self) -> bool: ...

    def start(self) -> dict[str, Any]: ...

    def run(self, request: dict[str, Any]) -> Iterator[tuple[Any, ...]]: ...

    def interrupt(self, prompt_id: str | None) -> None: ...

    def request_free(self, unload_models: bool, free_memory: bool) -> None: ...

    def stop(self, timeout: float = 10.0) -> None: ...

    def kill(self) -> None: ...


@dataclass
class Slot:
    channel: Channel
    thread: threading.Thread | None = None
    current: QueueItem | None = None
    completed: int = 0
    starts: int = 0
    lost: int = 0
    loaded_models: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.channel.name


class WorkerPool:
    def __init__(self, channels: list[Channel], store: PromptStore, hub: Hub, router: Router,
                 outputs: OutputStore) -> None:
        self.store = store
        self.hub = hub
        self.router = router
        self.outputs = outputs
        self.slots = [Slot(channel) for channel in channels]
        for slot in self.slots:
            router.add(slot.name)
        self._stopping = threading.Event()
        self._started = False

    # ---- the backend interface (any thread) -----------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for slot in self.slots:
            slot.thread = threading.Thread(target=self._loop, args=(slot,), name=f"sdgraph-pool-{slot.name}",
                                           daemon=True)
            slot.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self.store.close()
        for slot in self.slots:
            if slot.current is not None:
                slot.channel.interrupt(slot.current.prompt_id)
        for slot in self.slots:
            if slot.thread is not None:
                slot.thread.join(timeout)
            slot.channel.stop(timeout)

    @property
    def alive(self) -> bool:
        return self._started and any(s.thread is not None and s.thread.is_alive() for s in self.slots)

    def interrupt(self, prompt_id: str | None = None) -> bool:
        running = {item.prompt_id for item in self.store.snapshot()[0]}
        if not running or (prompt_id is not None and prompt_id not in running):
            return False
        for slot in self.slots:
            current = slot.current
            if current is not None and (prompt_id is None or current.prompt_id == prompt_id):
                slot.channel.interrupt(current.prompt_id)
        return True

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        for slot in self.slots:
            slot.channel.request_free(unload_models, free_memory)

    def describe(self) -> list[dict[str, Any]]:
        """Each worker; `queue_depth` is what it runs plus the pending prompts whose models it holds (the queue
        is shared: `pending` is all of it)."""
        pending = self.store.snapshot()[1]
        warm = self.router.warm_counts(pending[:256])  # the next ones up; parsing them all could be slow
        return [{
            "name": slot.name, "kind": slot.channel.kind, "alive": slot.channel.alive,
            "pid": slot.channel.hello.get("pid"), "device": slot.channel.hello.get("device"),
            "node": slot.channel.hello.get("node"),
            "state": "running" if slot.current is not None else "idle",
            "prompt_id": slot.current.prompt_id if slot.current is not None else None,
            "queue_depth": (slot.current is not None) + warm.get(slot.name, 0), "pending": len(pending),
            "completed": slot.completed, "restarts": max(0, slot.starts - 1), "lost": slot.lost,
            "loaded_models": sorted(set(self.router.workers[slot.name].held) | set(slot.loaded_models)),
        } for slot in self.slots]

    def kill_worker(self, name: str) -> None:
        """End one worker abruptly, as a crash would (for tests and drills)."""
        next(slot for slot in self.slots if slot.name == name).channel.kill()

    # ---- a worker's thread ------------------------------------------------------------------------------

    def _loop(self, slot: Slot) -> None:
        while not self._stopping.is_set():
            try:
                if not slot.channel.alive and not self._start(slot):
                    continue
                item = self.store.take(timeout=POLL_SECONDS, worker=slot.name,
                                       pick=lambda window: self.router.pick(slot.name, window))
                if item is not None:
                    self._serve(slot, item)
            except Exception:  # noqa: BLE001 - a worker's thread outlives every prompt
                log.exception("worker %s: unexpected failure; continuing", slot.name)

    def _start(self, slot: Slot) -> bool:
        slot.starts += 1
        try:
            slot.channel.start()
            return True
        except Exception:  # noqa: BLE001
            log.exception("worker %s could not start", slot.name)
            self._stopping.wait(RESTART_PAUSE_S)
            return False

    def _serve(self, slot: Slot, item: QueueItem) -> None:
        slot.current = item
        hit = self.router.started(slot.name, item)
        started, seconds = time.perf_counter(), None
        try:
            self._run(slot, item)
            seconds = time.perf_counter() - started
            slot.completed += 1
        except WorkerLost as exc:
            slot.lost += 1
            slot.channel.kill()
            self.outputs.abandon(slot.channel.hello.get("spool"))
            self.router.lost(slot.name, item.prompt_id)
            self._lost(slot, item, str(exc))
        finally:
            slot.current = None
            self.router.finished(slot.name, item, seconds, hit)
            self.hub.post_status()

    def _run(self, slot: Slot, item: QueueItem) -> None:
        request = {"prompt_id": item.prompt_id, "prompt_json": item.prompt_json, "extra_data": item.extra_data}
        recorded = False
        spool = slot.channel.hello.get("spool")
        for message in slot.channel.run(request):
            kind = message[0]
            if kind == "file":
                self.outputs.receive(message[1], message[2], message[3])
            elif kind == "event":
                data = message[2]
                if message[1] == "executed":
                    data = {**data, "output": self.outputs.resolve(spool, data.get("output"))}
                self._post(message[1], data, item.client_id)
            elif kind == "record":
                self._record(slot, item, self.outputs.resolve_entry(spool, json.loads(message[1])))
                recorded = True
            elif kind == "done":
                slot.loaded_models = list(message[1].get("loaded_models") or [])
                if not recorded:  # failed outside the executor: end the prompt all the same
                    self._fail(slot, item, message[1].get("error") or error_payload(
                        item.prompt_id, message="the worker ended the run without a result"))

    def _post(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        post_event(self.hub, event, data, sid)

    def _record(self, slot: Slot, item: QueueItem, entry: dict[str, Any]) -> None:
        interrupted = entry.get("status", {}).get("messages", [[None]])[-1][0] == "execution_interrupted"
        if self._stopping.is_set() and interrupted:
            self.store.requeue(item.prompt_id)  # cut short by the stop: it runs again after a restart
            return
        try:
            self.store.finish(item.prompt_id, entry, worker=slot.name)
        except Exception as exc:  # noqa: BLE001 - a full disk or the like: the prompt still ends, as an error
            log.error("could not record prompt %s", item.prompt_id, exc_info=exc)
            error = error_payload(item.prompt_id, exc, message=f"the prompt ran, but its result could not be "
                                                               f"recorded: {type(exc).__name__}: {exc}")
            self.hub.post(text_frame("execution_error", error), item.client_id)
            failed = RunResult(item.prompt_id, "error", error=error,
                               messages=[*entry["status"]["messages"], ["execution_error", error]])
            try:
                self.store.finish(item.prompt_id, history_entry(failed), worker=slot.name)
            except Exception:  # noqa: BLE001
                log.exception("could not record the failure of prompt %s either", item.prompt_id)

    def _fail(self, slot: Slot, item: QueueItem, error: dict[str, Any]) -> None:
        result = RunResult(item.prompt_id, "error", error=error, messages=[["execution_error", error]])
        try:
            self.store.finish(item.prompt_id, history_entry(result), worker=slot.name)
        finally:
            self._announce_end(item, error)

    def _lost(self, slot: Slot, item: QueueItem, reason: str) -> None:
        error = self.store.lost(item.prompt_id, slot.name, f"worker {slot.name}: {reason}")
        if error is not None:
            self._announce_end(item, error)

    def _announce_end(self, item: QueueItem, error: dict[str, Any]) -> None:
        self.hub.post(text_frame("execution_error", error), item.client_id)
        self.hub.post(text_frame("executing", {"node": None, "display_node": None, "prompt_id": item.prompt_id}),
                      item.client_id)


def subprocess_pool(count: int, factory: Callable[[], Any], policy: str = "affinity"
                    ) -> Callable[..., WorkerPool]:
    """A BackendFactory for `create_app`: `count` child processes, each with an executor from `factory`."""
    from sdgraph.server.child import SubprocessChannel  # noqa: PLC0415
    from sdgraph.server.routing import prompt_models  # noqa: PLC0415

    def build(executor: Any, store: PromptStore, hub: Hub) -> WorkerPool:
        channels = [SubprocessChannel(f"p{i}", factory) for i in range(count)]
        router = Router(lambda prompt: prompt_models(prompt, executor.registry), policy=policy)
        return WorkerPool(channels, store, hub, router, OutputStore(executor.services.dirs))

    return build
