"""The subprocess transport: an executor in a child process (multiprocessing, spawned), spoken to over two pipes.

The control pipe carries the server's requests (`run`, `interrupt`, `free`, `stop`) to the child, where a thread
reads them, so an interrupt arrives while a prompt runs; the event pipe carries the run's messages back
(`sdgraph.server.remote`) in order. The child builds its executor with a picklable factory (a module-level
function, or a functools.partial of one). When the child dies (a segfaulting node, `os._exit`, the OOM killer),
the event pipe ends: `run` raises WorkerLost, and the pool requeues or fails the prompt and starts a new child.
"""
from __future__ import annotations

import faulthandler
import logging
import multiprocessing
import queue
import threading
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterator

from sdgraph.execute import Executor
from sdgraph.server.backend import WorkerLost
from sdgraph.server.remote import Message, RemoteRunner
from sdgraph.server.spool import remove_left

log = logging.getLogger("sdgraph.server")

START_TIMEOUT_S = 300.0  # building an executor loads every node pack (torch included)
ExecutorFactory = Callable[[], Executor]


class SubprocessChannel:
    kind = "subprocess"

    def __init__(self, name: str, factory: ExecutorFactory) -> None:
        self.name = name
        self.factory = factory
        self.hello: dict[str, Any] = {}
        self._process: multiprocessing.process.BaseProcess | None = None
        self._control: Connection | None = None
        self._events: Connection | None = None
        self._send_lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> dict[str, Any]:
        context = multiprocessing.get_context("spawn")  # never fork a process with threads and an event loop
        control_child, control = context.Pipe(duplex=False)
        events, events_child = context.Pipe(duplex=False)
        process = context.Process(target=child_main, args=(self.factory, control_child, events_child),
                                  name=f"sdgraph-worker-{self.name}", daemon=True)
        process.start()
        control_child.close()  # the child holds the other ends: its death ends our reads
        events_child.close()
        self._process, self._control, self._events = process, control, events
        if not events.poll(START_TIMEOUT_S):
            self.kill()
            raise WorkerLost(f"worker {self.name} did not start within {START_TIMEOUT_S:.0f} s")
        try:
            kind, self.hello = events.recv()
        except (EOFError, OSError):
            raise WorkerLost(f"worker {self.name} exited while starting ({self._exit()})") from None
        assert kind == "ready", kind
        return self.hello

    def run(self, request: dict[str, Any]) -> Iterator[Message]:
        """The run's messages, up to and including `done`; WorkerLost if the child dies first."""
        self._send(("run", request))
        assert self._events is not None
        while True:
            try:
                message = self._events.recv()
            except (EOFError, OSError):
                raise WorkerLost(f"the worker process exited ({self._exit()})") from None
            yield message
            if message[0] == "done":
                return

    def interrupt(self, prompt_id: str | None) -> None:
        self._send(("interrupt", prompt_id))

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        self._send(("free", unload_models, free_memory))

    def stop(self, timeout: float = 10.0) -> None:
        self._send(("stop",))
        if self._process is not None:
            self._process.join(timeout)
        self.kill()

    def kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        for conn in (self._control, self._events):
            if conn is not None:
                conn.close()
        remove_left(self.hello)  # a child that died could not remove its spool; it is on this machine

    def _send(self, message: Message) -> None:
        with self._send_lock:
            try:
                if self._control is not None and not self._control.closed:
                    self._control.send(message)
            except (OSError, ValueError):
                pass  # a dead child: its run's reader reports it

    def _exit(self) -> str:
        process = self._process
        if process is None:
            return "never started"
        process.join(5)
        code = process.exitcode
        if code is None:
            return "it stopped answering"
        return f"killed by signal {-code}" if code < 0 else f"exit status {code}"


# ---- the child ----------------------------------------------------------------------------------------------


def child_main(factory: ExecutorFactory, control: Connection, events: Connection) -> None:
    faulthandler.enable()  # a segfault leaves its traceback on stderr
    runner = RemoteRunner(factory())
    runs: queue.Queue[dict[str, Any] | None] = queue.Queue()
    threading.Thread(target=_read_control, args=(control, runner, runs), daemon=True).start()
    events.send(("ready", runner.hello()))
    try:
        while (request := runs.get()) is not None:
            runner.run(request, events.send)
    finally:
        runner.close()


def _read_control(control: Connection, runner: RemoteRunner, runs: queue.Queue[dict[str, Any] | None]) -> None:
    while True:
        try:
            message = control.recv()
        except (EOFError, OSError):  # the server is gone: so are we, once the current run ends
            runs.put(None)
            return
        if message[0] == "run":
            runs.put(message[1])
        elif message[0] == "interrupt":
            runner.interrupt(message[1])
        elif message[0] == "free":
            runner.request_free(message[1], message[2])
        elif message[0] == "stop":
            runner.interrupt(None)
            runs.put(None)
            return
