"""The prompt queue and the history, kept in SQLite (WAL) so that a restart loses neither.

A prompt's row is 'pending' from submission, 'running' (with its attempt count) once a worker takes it, and
'done' (a history entry) when it finishes. A prompt found 'running' at start-up was running when the process
died: it is retried once, and after a second death it is failed with an error in its history, so one prompt
that kills the process cannot stop everything queued behind it. Pending prompts are ordered by `number` (a
`front` prompt gets a negative one), then by submission.

A taken prompt is leased to the worker that took it (its name is in the row): a worker backend that loses a worker
mid-prompt calls `lost`, which requeues the prompt once and fails it the next time, and a late `finish` from a
worker that no longer holds the lease is ignored, so a prompt is never in the history twice.

Pending prompts are held compactly, as the JSON text they are stored as; the worker prepares each again when it
runs it. Credentials in `extra_data` are kept in a column of their own, never echoed, and cleared when the prompt
finishes; the database files are readable by their owner only. Every method is thread-safe: the HTTP side and the
worker share one store.
"""
from __future__ import annotations

import heapq
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sdgraph.execute import error_payload
from sdgraph.server import piecewise_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    prompt_id TEXT PRIMARY KEY,
    number REAL NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    client_id TEXT,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs_to_execute TEXT NOT NULL,
    result TEXT,
    finished INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    secrets TEXT,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS prompts_finished ON prompts(state, finished);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

TRIM_EVERY = 16  # finished prompts between trims of the history to max_history
MAX_ATTEMPTS = 2  # a prompt that was running when the process died twice is failed, not run a third time
# Added since the first schema; an older database file gets them when it is opened.
COLUMNS = (("attempts", "INTEGER NOT NULL DEFAULT 0"), ("secrets", "TEXT"), ("worker", "TEXT"))
WINDOW = 64  # pending prompts a worker backend's `pick` chooses among (the oldest ones)

# Keys that may carry credentials for API nodes; never echoed back by /queue or /history.
SENSITIVE_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")

log = logging.getLogger("sdgraph.server")


@dataclass
class QueueItem:
    """A queued prompt, held as the JSON text it is stored as."""

    prompt_id: str
    number: float
    seq: int
    prompt_json: str
    extra_json: str  # extra_data without its credentials
    outputs_to_execute: list[str]
    client_id: str | None = None
    secrets: dict[str, Any] = field(default_factory=dict, repr=False)
    attempts: int = 0
    worker: str | None = None  # the worker holding the lease while it runs

    @property
    def prompt(self) -> dict[str, Any]:
        return piecewise_json.loads(self.prompt_json)

    @property
    def extra_data(self) -> dict[str, Any]:
        return {**json.loads(self.extra_json), **self.secrets}

    @property
    def nbytes(self) -> int:
        return len(self.prompt_json) + len(self.extra_json)

    def as_json(self) -> bytes:
        """The ecosystem's queue entry, [number, prompt_id, prompt, extra_data, outputs_to_execute], as UTF-8 JSON
        spliced from the stored texts: a large prompt is never parsed to be listed (nor kept twice)."""
        head = json.dumps([_number(self.number), self.prompt_id])[:-1]
        return f"{head}, {self.prompt_json}, {self.extra_json}, {json.dumps(self.outputs_to_execute)}]".encode()


class DuplicatePrompt(ValueError):
    pass


class QueueFull(RuntimeError):
    """The queue holds as many prompts, or bytes of prompts, as it may."""


class StorageFull(OSError):
    """The disk under the database is full: nothing more can be queued until space is freed."""


class PromptStore:
    """Pending and running prompts in memory (one lock), mirrored to SQLite with the history (another lock).

    Two locks keep the HTTP side from waiting on a worker's database write just to read the queue.
    """

    def __init__(self, path: Path | str, max_history: int = 10000, max_pending: int = 10000,
                 max_pending_bytes: int = 1 << 30) -> None:
        self.path = Path(path)
        self.max_history = max_history
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        if str(path) != ":memory:":
            _create_private(self.path)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        _add_missing_columns(self._db)
        self._db_lock = threading.Lock()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[str, QueueItem] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._running: dict[str, QueueItem] = {}
        self._pending_bytes = 0
        self._closed = False
        self.on_queued: Callable[[], None] | None = None  # told of each new prompt before any worker sees it
        self.counter = 0
        self.seq = 0
        self.finished = 0
        self._load()

    # ---- start-up ---------------------------------------------------------------------------------------

    def _load(self) -> None:
        self.counter = self._meta("counter")
        self.finished = self._db.execute("SELECT COALESCE(MAX(finished), 0) FROM prompts").fetchone()[0]
        self.seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM prompts").fetchone()[0]
        self._fail_repeated_crashes()
        with self._db:
            self._db.execute("UPDATE prompts SET state='pending', worker=NULL WHERE state='running'")
        rows = self._db.execute(
            "SELECT prompt_id, number, seq, client_id, prompt, extra_data, outputs_to_execute, secrets, attempts "
            "FROM prompts WHERE state='pending'").fetchall()
        for pid, number, seq, client_id, prompt, extra, outs, secrets, attempts in rows:
            item = QueueItem(pid, number, seq, prompt, extra, json.loads(outs), client_id,
                             json.loads(secrets) if secrets else {}, attempts)
            self._pending[pid] = item
            self._pending_bytes += item.nbytes
            self._heap.append((number, seq, pid))
        heapq.heapify(self._heap)

    def _fail_repeated_crashes(self) -> None:
        """Prompts that were running when the process died for the MAX_ATTEMPTS-th time go to the history."""
        rows = self._db.execute("SELECT prompt_id, attempts FROM prompts WHERE state='running' AND attempts >= ?",
                                (MAX_ATTEMPTS,)).fetchall()
        for pid, attempts in rows:
            log.error("prompt %s was running when the server stopped %d times; failing it", pid, attempts)
            self.finished += 1
            with self._db:
                self._db.execute("UPDATE prompts SET state='done', result=?, finished=?, secrets=NULL "
                                 "WHERE prompt_id=?", (_dumps(_crashed_result(pid, attempts)), self.finished, pid))

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    # ---- the queue --------------------------------------------------------------------------------------

    def put(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any], outputs: list[str], *,
            client_id: str | None = None, number: float | None = None, front: bool = False) -> QueueItem:
        """Queue a validated prompt; returns its item (with the number it was given).

        Raises DuplicatePrompt for a prompt_id in use, QueueFull when the queue is at its bounds."""
        return self.put_many([(prompt_id, prompt, outputs)], extra_data, client_id=client_id, number=number,
                             front=front)[0]

    def put_many(self, prompts: list[tuple[str, dict[str, Any], list[str]]], extra_data: dict[str, Any], *,
                 client_id: str | None = None, number: float | None = None, front: bool = False
                 ) -> list[QueueItem]:
        """Queue validated `(prompt_id, prompt, outputs)`s in order, all or none, in one database transaction."""
        secrets = {k: v for k, v in extra_data.items() if k in SENSITIVE_KEYS}
        extra_json = _dumps(_public(extra_data))
        texts = [piecewise_json.dumps_members(prompt, _dumps) for _, prompt, _ in prompts]
        ids = [prompt_id for prompt_id, _, _ in prompts]
        if len(set(ids)) != len(ids):
            raise DuplicatePrompt("the same prompt_id appears twice in one submission")
        nbytes = sum(len(text) + len(extra_json) for text in texts)
        items = []
        with self._lock:
            taken = next((i for i in ids if i in self._pending or i in self._running), None)
            if taken is not None:
                raise DuplicatePrompt(f"prompt_id {taken!r} was already submitted")
            self._check_room(nbytes, len(prompts))
            for (prompt_id, _, outputs), text in zip(prompts, texts):
                given = number
                if given is None:
                    given = -self.counter if front else self.counter
                    self.counter += 1
                self.seq += 1
                items.append(QueueItem(prompt_id, float(given), self.seq, text, extra_json, outputs, client_id,
                                       secrets))
            counter = self.counter
            self._pending_bytes += nbytes  # reserved now, so concurrent submissions respect the bound
        try:
            self._insert(items, counter)
        except BaseException:
            with self._lock:
                self._pending_bytes -= nbytes
            raise
        with self._lock:
            for item in items:
                self._pending[item.prompt_id] = item
                heapq.heappush(self._heap, (item.number, item.seq, item.prompt_id))
            if self.on_queued is not None:
                self.on_queued()  # so the queue's new status goes out before the prompt's first event
            self._changed.notify_all()
        return items

    def _check_room(self, nbytes: int, count: int = 1) -> None:
        if len(self._pending) + count > self.max_pending:
            raise QueueFull(f"the queue is full ({len(self._pending)} prompts pending, the limit is "
                            f"{self.max_pending}); try again when some have run")
        if self._pending_bytes + nbytes > self.max_pending_bytes:
            raise QueueFull(f"the queue is full ({self._pending_bytes} bytes of prompts pending, this one "
                            f"adds {nbytes}, the limit is {self.max_pending_bytes}); try again later")

    def _insert(self, items: list[QueueItem], counter: int) -> None:
        with self._db_lock:
            try:
                with self._db:
                    self._db.executemany(
                        "INSERT INTO prompts(prompt_id, number, seq, state, client_id, prompt, extra_data, "
                        "outputs_to_execute, secrets) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                        [(item.prompt_id, item.number, item.seq, item.client_id, item.prompt_json, item.extra_json,
                          _dumps(item.outputs_to_execute), _dumps(item.secrets) if item.secrets else None)
                         for item in items])
                    self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('counter', ?)", (counter,))
            except sqlite3.IntegrityError:
                which = repr(items[0].prompt_id) if len(items) == 1 else "of this submission"
                raise DuplicatePrompt(f"prompt_id {which} was already submitted") from None
            except sqlite3.OperationalError as exc:
                if "full" in str(exc):
                    raise StorageFull(f"cannot queue the prompt: the disk holding {self.path.name} is full") from exc
                raise

    def take(self, timeout: float | None = None, *, worker: str | None = None,
             pick: Callable[[list[QueueItem]], QueueItem | None] | None = None) -> QueueItem | None:
        """The next pending prompt, now running (leased to `worker`); None after `timeout` seconds or when closed.

        With `pick`, the prompt is the one it chooses among the WINDOW oldest pending ones (called under the
        store's lock, so it must be quick); when it chooses none, the worker waits for the queue to change."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            item = self._next(deadline) if pick is None else self._picked(deadline, pick)
            if item is not None:
                item.worker = worker
        if item is not None:
            self._mark_running(item)
        return item

    def peek_pending(self, limit: int) -> list[QueueItem]:
        """The next `limit` pending prompts in the order they will run, left pending."""
        with self._lock:
            return heapq.nsmallest(limit, self._pending.values(), key=lambda item: (item.number, item.seq))

    def claim(self, prompt_ids: list[str], *, worker: str | None = None) -> list[QueueItem]:
        """Take these pending prompts out of turn, now running and leased to `worker` (to run with another:
        cross-prompt batching); those no longer pending are left out."""
        with self._lock:
            items = [item for pid in prompt_ids if (item := self._pending.pop(pid, None)) is not None]
            for item in items:
                self._pending_bytes -= item.nbytes
                self._running[item.prompt_id] = item
                item.worker = worker
        for item in items:
            self._mark_running(item)
        return items

    def _mark_running(self, item: QueueItem) -> None:
        """Record the attempt before it starts: what tells a restart that this prompt may have killed us."""
        item.attempts += 1
        try:
            with self._db_lock, self._db:
                self._db.execute("UPDATE prompts SET state='running', attempts=?, worker=? WHERE prompt_id=?",
                                 (item.attempts, item.worker, item.prompt_id))
        except sqlite3.Error:
            log.exception("could not record that prompt %s started", item.prompt_id)

    def _picked(self, deadline: float | None,
                pick: Callable[[list[QueueItem]], QueueItem | None]) -> QueueItem | None:
        while True:
            window = heapq.nsmallest(WINDOW, self._pending.values(), key=lambda item: (item.number, item.seq))
            chosen = pick(window) if window else None
            if chosen is not None and self._pending.pop(chosen.prompt_id, None) is chosen:
                self._pending_bytes -= chosen.nbytes  # its heap entry is skipped later, as a deleted one is
                self._running[chosen.prompt_id] = chosen
                return chosen
            if self._closed:
                return None
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            # A choice can depend on time (how long a prompt has waited): look again now and then.
            self._changed.wait(0.05 if remaining is None else min(remaining, 0.05))

    def _next(self, deadline: float | None) -> QueueItem | None:
        while True:
            while self._heap:
                _, _, pid = heapq.heappop(self._heap)
                item = self._pending.pop(pid, None)
                if item is not None:  # else: deleted while pending
                    self._pending_bytes -= item.nbytes
                    self._running[pid] = item
                    return item
            if self._closed:
                return None
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._changed.wait(remaining)

    def finish(self, prompt_id: str, result: dict[str, Any], *, worker: str | None = None) -> bool:
        """Move a running prompt into the history with its outputs and status.

        With `worker`, only while that worker holds the prompt's lease: otherwise nothing is written and False
        is returned (a worker that was given up on must not add a second history entry).
        The prompt stops counting as running even when the write fails (the error is raised all the same), so
        the queue empties whatever happens to the history."""
        if worker is not None:
            with self._lock:
                held = self._running.get(prompt_id)
                if held is None or held.worker != worker:
                    log.warning("worker %s finished prompt %s without holding its lease; ignored", worker,
                                prompt_id)
                    return False
        try:
            text = _dumps(result)
            with self._db_lock:
                finished = self.finished + 1
                with self._db:
                    self._db.execute("UPDATE prompts SET state='done', result=?, finished=?, secrets=NULL "
                                     "WHERE prompt_id=?", (text, finished, prompt_id))
                    if self.max_history > 0 and finished % TRIM_EVERY == 0:
                        self._db.execute("DELETE FROM prompts WHERE state='done' AND finished <= ?",
                                         (finished - self.max_history,))
                self.finished = finished
        finally:
            with self._lock:
                self._running.pop(prompt_id, None)
                self._changed.notify_all()
        return True

    def lost(self, prompt_id: str, worker: str, reason: str) -> dict[str, Any] | None:
        """The worker running this prompt is gone: requeue the prompt (None), or, once it has been tried
        MAX_ATTEMPTS times, fail it and return its `execution_error` payload. A prompt whose lease the worker
        no longer holds is left alone (None)."""
        with self._lock:
            item = self._running.get(prompt_id)
            if item is None or item.worker != worker:
                return None
            retry = item.attempts < MAX_ATTEMPTS
            if retry:
                del self._running[prompt_id]
                item.worker = None
                self._pending[prompt_id] = item
                self._pending_bytes += item.nbytes
                heapq.heappush(self._heap, (item.number, item.seq, prompt_id))
                self._changed.notify_all()
        if retry:
            log.warning("worker %s was lost running prompt %s (%s); queued again", worker, prompt_id, reason)
            with self._db_lock, self._db:
                self._db.execute("UPDATE prompts SET state='pending', worker=NULL WHERE prompt_id=?", (prompt_id,))
            return None
        log.error("worker %s was lost running prompt %s (%s), attempt %d; failing it", worker, prompt_id, reason,
                  item.attempts)
        result = _lost_result(prompt_id, worker, reason, item.attempts)
        self.finish(prompt_id, result, worker=worker)
        return result["status"]["messages"][-1][1]

    def requeue(self, prompt_id: str) -> None:
        """Put a running prompt back at its place in the queue (used when shutting down mid-run): a clean stop
        does not count as an attempt."""
        with self._lock:
            item = self._running.pop(prompt_id, None)
            if item is not None:
                item.attempts -= 1
                item.worker = None
                self._pending[prompt_id] = item
                self._pending_bytes += item.nbytes
                heapq.heappush(self._heap, (item.number, item.seq, prompt_id))
            self._changed.notify_all()
        if item is not None:
            with self._db_lock, self._db:
                self._db.execute("UPDATE prompts SET state='pending', attempts=?, worker=NULL WHERE prompt_id=?",
                                 (item.attempts, prompt_id))

    def delete_pending(self, prompt_ids: list[str]) -> int:
        with self._lock:
            gone = [item for pid in prompt_ids if (item := self._pending.pop(pid, None)) is not None]
            self._pending_bytes -= sum(item.nbytes for item in gone)
            gone = [item.prompt_id for item in gone]
            self._changed.notify_all()
        with self._db_lock, self._db:
            self._db.executemany("DELETE FROM prompts WHERE prompt_id=? AND state='pending'",
                                 [(pid,) for pid in gone])
        return len(gone)

    def clear_pending(self) -> int:
        with self._lock:
            gone = list(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            self._heap.clear()
            self._changed.notify_all()
        with self._db_lock, self._db:
            self._db.executemany("DELETE FROM prompts WHERE prompt_id=? AND state='pending'",
                                 [(pid,) for pid in gone])
        return len(gone)

    def snapshot(self) -> tuple[list[QueueItem], list[QueueItem]]:
        """(running, pending), pending in the order they will run."""
        with self._lock:
            pending = sorted(self._pending.values(), key=lambda item: (item.number, item.seq))
            return list(self._running.values()), pending

    def remaining(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._running)

    def is_running(self, prompt_id: str) -> bool:
        with self._lock:
            return prompt_id in self._running

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending or running (for tests and the benchmark)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending or self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    # ---- the history ------------------------------------------------------------------------------------

    def history(self, max_items: int | None = None, offset: int = -1) -> dict[str, Any]:
        """Finished prompts, oldest first. Without an offset, `max_items` gives the most recent ones."""
        return json.loads(self.history_json(max_items, offset))

    def history_json(self, max_items: int | None = None, offset: int = -1) -> bytes:
        """`history` as UTF-8 JSON, spliced from the stored texts (no prompt is parsed to be shown)."""
        with self._db_lock:
            self._trim()
            total = self._db.execute("SELECT COUNT(*) FROM prompts WHERE state='done'").fetchone()[0]
            if offset < 0:
                offset = max(0, total - max_items) if max_items is not None else 0
            limit = -1 if max_items is None else max_items
            rows = self._db.execute(
                "SELECT prompt_id, number, prompt, extra_data, outputs_to_execute, result FROM prompts "
                "WHERE state='done' ORDER BY finished LIMIT ? OFFSET ?", (limit, offset)).fetchall()
        return _history_json(rows)

    def _trim(self) -> None:
        if self.max_history > 0:
            self._db.execute("DELETE FROM prompts WHERE state='done' AND finished <= ?",
                             (self.finished - self.max_history,))

    def history_item(self, prompt_id: str) -> dict[str, Any]:
        return json.loads(self.history_item_json(prompt_id))

    def history_item_json(self, prompt_id: str) -> bytes:
        with self._db_lock:
            rows = self._db.execute(
                "SELECT prompt_id, number, prompt, extra_data, outputs_to_execute, result FROM prompts "
                "WHERE state='done' AND prompt_id=?", (prompt_id,)).fetchall()
        return _history_json(rows)

    def delete_history(self, prompt_ids: list[str]) -> None:
        with self._db_lock, self._db:
            self._db.executemany("DELETE FROM prompts WHERE prompt_id=? AND state='done'",
                                 [(pid,) for pid in prompt_ids])

    def clear_history(self) -> None:
        with self._db_lock:
            self._db.execute("DELETE FROM prompts WHERE state='done'")

    def history_count(self) -> int:
        with self._db_lock:
            return self._db.execute("SELECT COUNT(*) FROM prompts WHERE state='done'").fetchone()[0]

    # ---- life cycle -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Wake every waiting worker; the database stays readable until `close_db`."""
        with self._lock:
            self._closed = True
            self._changed.notify_all()

    def close_db(self) -> None:
        with self._db_lock:
            self._db.close()


def _history_json(rows: list[tuple[Any, ...]]) -> bytes:
    return ("{" + ", ".join(_history_entry(row) for row in rows) + "}").encode()


def _history_entry(row: tuple[Any, ...]) -> str:
    """`"<id>": {<result's members>, "prompt": [number, id, prompt, extra_data, outputs]}` as JSON text."""
    pid, number, prompt, extra, outs, result = row
    listing = f"{json.dumps([_number(number), pid])[:-1]}, {prompt}, {_dumps(_public(json.loads(extra)))}, {outs}]"
    members = (result or "{}").strip()[1:-1].strip()
    members = f'{members}, "prompt": {listing}' if members else f'"prompt": {listing}'
    return f"{json.dumps(pid)}: {{{members}}}"


def _crashed_result(prompt_id: str, attempts: int) -> dict[str, Any]:
    message = (f"the server stopped while running this prompt, {attempts} times (a node may have crashed the "
               f"process or run it out of memory); it is not retried again")
    error = error_payload(prompt_id, message=message, exception_type="sdgraph.PromptCrashedServer")
    return {"outputs": {}, "meta": {},
            "status": {"status_str": "error", "completed": False, "messages": [["execution_error", error]]}}


def _lost_result(prompt_id: str, worker: str, reason: str, attempts: int) -> dict[str, Any]:
    message = (f"the worker running this prompt was lost ({reason}; last on worker {worker}), {attempts} times; "
               f"it is not retried again")
    error = error_payload(prompt_id, message=message, exception_type="sdgraph.WorkerLost")
    return {"outputs": {}, "meta": {},
            "status": {"status_str": "error", "completed": False, "messages": [["execution_error", error]]}}


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (SQLite gives its WAL files the same mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for suffix in ("", "-wal", "-shm"):
        candidate = path.with_name(path.name + suffix)
        if candidate.exists():
            os.chmod(candidate, 0o600)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    present = {row[1] for row in db.execute("PRAGMA table_info(prompts)")}
    for name, declaration in COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE prompts ADD COLUMN {name} {declaration}")


def _public(extra_data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in extra_data.items() if k not in SENSITIVE_KEYS}


def _number(number: float) -> int | float:
    return int(number) if float(number).is_integer() else number


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
