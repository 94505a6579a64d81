"""The prompt queue and the history, kept in SQLite (WAL) so that a restart loses neither.

A prompt's row is 'pending' from submission until it finishes and becomes 'done' (a history entry); which one is
running is known in memory only, so a prompt that was running when the process died is simply pending again on
the next start. Pending prompts are ordered by `number` (a `front` prompt gets a negative one), then by
submission. Every method is thread-safe: the HTTP side and the worker threads share one store.
"""
from __future__ import annotations

import heapq
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    finished INTEGER
);
CREATE INDEX IF NOT EXISTS prompts_finished ON prompts(state, finished);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

TRIM_EVERY = 16  # finished prompts between trims of the history to max_history

# Keys that may carry credentials for API nodes; never echoed back by /queue or /history.
SENSITIVE_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


@dataclass
class QueueItem:
    prompt_id: str
    number: float
    seq: int
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]
    client_id: str | None = None
    # Kept in memory from submit time so the worker need not parse and validate again (None after a restart).
    workflow: Any = field(default=None, compare=False, repr=False)
    report: Any = field(default=None, compare=False, repr=False)

    def as_list(self) -> list[Any]:
        """The ecosystem's queue entry: [number, prompt_id, prompt, extra_data, outputs_to_execute]."""
        return [_number(self.number), self.prompt_id, self.prompt, _public(self.extra_data),
                list(self.outputs_to_execute)]


class DuplicatePrompt(ValueError):
    pass


class PromptStore:
    """Pending and running prompts in memory (one lock), mirrored to SQLite with the history (another lock).

    Two locks keep the HTTP side from waiting on a worker's database write just to read the queue.
    """

    def __init__(self, path: Path | str, max_history: int = 10000) -> None:
        self.path = Path(path)
        self.max_history = max_history
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db_lock = threading.Lock()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[str, QueueItem] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._running: dict[str, QueueItem] = {}
        self._closed = False
        self.counter = 0
        self.seq = 0
        self.finished = 0
        self._load()

    # ---- start-up ---------------------------------------------------------------------------------------

    def _load(self) -> None:
        rows = self._db.execute(
            "SELECT prompt_id, number, seq, client_id, prompt, extra_data, outputs_to_execute "
            "FROM prompts WHERE state='pending'").fetchall()
        for pid, number, seq, client_id, prompt, extra, outs in rows:
            item = QueueItem(pid, number, seq, json.loads(prompt), json.loads(extra), json.loads(outs), client_id)
            self._pending[pid] = item
            self._heap.append((number, seq, pid))
        heapq.heapify(self._heap)
        self.counter = self._meta("counter")
        self.finished = self._db.execute("SELECT COALESCE(MAX(finished), 0) FROM prompts").fetchone()[0]
        self.seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM prompts").fetchone()[0]

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    # ---- the queue --------------------------------------------------------------------------------------

    def put(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any], outputs: list[str], *,
            client_id: str | None = None, number: float | None = None, front: bool = False,
            workflow: Any = None, report: Any = None) -> QueueItem:
        """Queue a validated prompt; returns its item (with the number it was given)."""
        with self._lock:
            if prompt_id in self._pending or prompt_id in self._running:
                raise DuplicatePrompt(f"prompt_id {prompt_id!r} was already submitted")
            if number is None:
                number = -self.counter if front else self.counter
                self.counter += 1
            self.seq += 1
            counter = self.counter
            item = QueueItem(prompt_id, float(number), self.seq, prompt, extra_data, outputs, client_id,
                             workflow, report)
        with self._db_lock:
            try:
                with self._db:
                    self._db.execute(
                        "INSERT INTO prompts(prompt_id, number, seq, state, client_id, prompt, extra_data, "
                        "outputs_to_execute) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)",
                        (prompt_id, item.number, item.seq, client_id, _dumps(prompt), _dumps(extra_data),
                         _dumps(outputs)))
                    self._db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('counter', ?)", (counter,))
            except sqlite3.IntegrityError:
                raise DuplicatePrompt(f"prompt_id {prompt_id!r} was already submitted") from None
        with self._lock:
            self._pending[prompt_id] = item
            heapq.heappush(self._heap, (item.number, item.seq, prompt_id))
            self._changed.notify_all()
        return item

    def take(self, timeout: float | None = None) -> QueueItem | None:
        """The next pending prompt, now running; None after `timeout` seconds or when closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            return self._next(deadline)  # the row stays 'pending' until it finishes: what a restart needs

    def _next(self, deadline: float | None) -> QueueItem | None:
        while True:
            while self._heap:
                _, _, pid = heapq.heappop(self._heap)
                item = self._pending.pop(pid, None)
                if item is not None:  # else: deleted while pending
                    self._running[pid] = item
                    return item
            if self._closed:
                return None
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            self._changed.wait(remaining)

    def finish(self, prompt_id: str, result: dict[str, Any]) -> None:
        """Move a running prompt into the history with its outputs and status."""
        text = _dumps(result)
        with self._db_lock:
            self.finished += 1
            finished = self.finished
            with self._db:
                self._db.execute("UPDATE prompts SET state='done', result=?, finished=? WHERE prompt_id=?",
                                 (text, finished, prompt_id))
                if self.max_history > 0 and finished % TRIM_EVERY == 0:
                    self._db.execute(
                        "DELETE FROM prompts WHERE state='done' AND finished <= ?", (finished - self.max_history,))
        with self._lock:
            self._running.pop(prompt_id, None)
            self._changed.notify_all()

    def requeue(self, prompt_id: str) -> None:
        """Put a running prompt back at its place in the queue (used when shutting down mid-run)."""
        with self._lock:
            item = self._running.pop(prompt_id, None)
            if item is not None:
                self._pending[prompt_id] = item
                heapq.heappush(self._heap, (item.number, item.seq, prompt_id))
            self._changed.notify_all()

    def delete_pending(self, prompt_ids: list[str]) -> int:
        with self._lock:
            gone = [pid for pid in prompt_ids if self._pending.pop(pid, None) is not None]
            self._changed.notify_all()
        with self._db_lock, self._db:
            self._db.executemany("DELETE FROM prompts WHERE prompt_id=? AND state='pending'",
                                 [(pid,) for pid in gone])
        return len(gone)

    def clear_pending(self) -> int:
        with self._lock:
            gone = list(self._pending)
            self._pending.clear()
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
        with self._db_lock:
            self._trim()
            total = self._db.execute("SELECT COUNT(*) FROM prompts WHERE state='done'").fetchone()[0]
            if offset < 0:
                offset = max(0, total - max_items) if max_items is not None else 0
            limit = -1 if max_items is None else max_items
            rows = self._db.execute(
                "SELECT prompt_id, number, prompt, extra_data, outputs_to_execute, result FROM prompts "
                "WHERE state='done' ORDER BY finished LIMIT ? OFFSET ?", (limit, offset)).fetchall()
        return dict(_history_entry(row) for row in rows)

    def _trim(self) -> None:
        if self.max_history > 0:
            self._db.execute("DELETE FROM prompts WHERE state='done' AND finished <= ?",
                             (self.finished - self.max_history,))

    def history_item(self, prompt_id: str) -> dict[str, Any]:
        with self._db_lock:
            rows = self._db.execute(
                "SELECT prompt_id, number, prompt, extra_data, outputs_to_execute, result FROM prompts "
                "WHERE state='done' AND prompt_id=?", (prompt_id,)).fetchall()
        return dict(_history_entry(row) for row in rows)

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


def _history_entry(row: tuple[Any, ...]) -> tuple[str, dict[str, Any]]:
    pid, number, prompt, extra, outs, result = row
    entry = json.loads(result) if result else {}
    entry["prompt"] = [_number(number), pid, json.loads(prompt), _public(json.loads(extra)), json.loads(outs)]
    return pid, entry


def _public(extra_data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in extra_data.items() if k not in SENSITIVE_KEYS}


def _number(number: float) -> int | float:
    return int(number) if float(number).is_integer() else number


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)
