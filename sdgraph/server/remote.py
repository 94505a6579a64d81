"""One executor away from the server (a child process, a Ray actor): runs prompts, streams their messages back.

A run is a request `{"prompt_id", "prompt_json", "extra_data"}`; what comes back is an ordered stream of
plain, picklable messages:
- `("event", type, data)`: an execution event as the WebSocket sends it (`preview` data carries
  `(format, bytes)` instead of an image object);
- `("file", meta, chunk, last)`: a file the run's nodes saved (`sdgraph.server.spool`), sent before the
  `executed` event or the record that names it;
- `("record", entry_json)`: the history entry (`worker.history_entry`) as JSON text, sent before the run's
  closing `executing: null`, so the server records it first, as the in-process worker does;
- `("done", {"status", "seconds", "loaded_models"})`: the end of the run; with `"error"` (and no record before
  it) when the run failed outside the executor's care.
The server does the recording, so a history write that fails is the server's error to report (the pool does).
Requests to free memory are carried out between runs; an interrupt reaches only the run it names.
"""
from __future__ import annotations

import io
import json
import logging
import os
import threading
from typing import Any, Callable

from sdgraph.collector import collector_paused
from sdgraph.execute import Executor, RunResult, error_payload
from sdgraph.server import piecewise_json
from sdgraph.server.backend import device_of, resident_models
from sdgraph.server.spool import Spool
from sdgraph.server.worker import free_executor, history_entry

log = logging.getLogger("sdgraph.server")

Message = tuple[Any, ...]
Send = Callable[[Message], None]


class RemoteRunner:
    """The executor side of a remote worker; the transport (pipe, actor) calls `run`, `interrupt`, `request_free`."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.spool = Spool()
        self.spool.attach(executor)
        self.current: str | None = None
        self._early_interrupt: str | None = None  # an interrupt for the run about to start
        self._lock = threading.Lock()
        self._free = {"unload_models": False, "free_memory": False}

    def hello(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "device": device_of(self.executor), **self.spool.describe()}

    def interrupt(self, prompt_id: str | None) -> bool:
        """Interrupt the run of `prompt_id` (the current run when None). One that has not started yet here (the
        server sent it just before) is interrupted as it starts."""
        with self._lock:
            if self.current is None or (prompt_id is not None and prompt_id != self.current):
                self._early_interrupt = prompt_id
                return False
            self.executor.interrupt()
            return True

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        with self._lock:
            self._free["unload_models"] |= unload_models
            self._free["free_memory"] |= free_memory

    def run(self, request: dict[str, Any], send: Send) -> None:
        """Run one prompt, sending its messages in order; never raises for the prompt's sake."""
        self._housekeeping()
        prompt_id = request["prompt_id"]
        with self._lock:
            self.current = prompt_id
            if self._early_interrupt == prompt_id:
                self.executor.interrupt()
            self._early_interrupt = None
        done: dict[str, Any] = {}
        try:
            with collector_paused():
                prompt = self.executor.prepare(piecewise_json.loads(request["prompt_json"]))
                result = self.executor.execute(prompt, prompt_id=prompt_id, listener=self._listener(send),
                                               extra_data=request.get("extra_data") or {},
                                               record=lambda r: self._record(r, send))
                prompt.release()
            done = {"status": result.status, "seconds": result.seconds}
        except Exception as exc:  # noqa: BLE001 - outside the executor's care: the server ends the prompt
            log.exception("prompt %s failed outside the executor", prompt_id)
            done = {"status": "error", "error": error_payload(prompt_id, exc)}
        finally:
            with self._lock:
                self.current = None
        send(("done", {**done, "loaded_models": resident_models(self.executor)}))

    def close(self) -> None:
        self.spool.remove()

    def _record(self, result: RunResult, send: Send) -> None:
        entry = _entry_json(result)
        self.spool.ship(send)  # every node is done: whatever they wrote goes, named in the entry or not
        send(("record", entry))

    def _listener(self, send: Send) -> Callable[[str, dict[str, Any]], None]:
        forward = _event_sender(send)

        def listener(event: str, data: dict[str, Any]) -> None:
            if event == "executed":
                try:
                    self.spool.ship(send, data.get("output"))
                except OSError:
                    log.exception("could not send the files of node %s", data.get("node"))
            forward(event, data)
        return listener

    def _housekeeping(self) -> None:
        with self._lock:
            request, self._free = self._free, {"unload_models": False, "free_memory": False}
        free_executor(self.executor, request)


def _entry_json(result: RunResult) -> str:
    """The history entry as the store would write it; a value JSON cannot hold raises here, in the executor's
    record step, which then ends the run as an error (as in-process)."""
    return json.dumps(history_entry(result), default=str)


def _event_sender(send: Send) -> Callable[[str, dict[str, Any]], None]:
    def listener(event: str, data: dict[str, Any]) -> None:
        try:
            if event == "preview":
                image = _portable_image(data.get("image"))
                if image is not None:
                    send(("event", "preview", {**data, "image": image}))
                return
            send(("event", event, json.loads(json.dumps(data, default=str))))
        except Exception:  # noqa: BLE001 - presenting an event must never break the run
            log.exception("could not send %s", event)
    return listener


def _portable_image(image: Any) -> tuple[str, bytes] | None:
    """A preview as (format, bytes): PIL images are encoded here, where they were made."""
    if isinstance(image, (tuple, list)) and len(image) == 2 and isinstance(image[1], (bytes, bytearray)):
        return str(image[0]), bytes(image[1])
    if hasattr(image, "save"):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
        return "JPEG", buffer.getvalue()
    return None
