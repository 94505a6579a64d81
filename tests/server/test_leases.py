"""Leases in the SQLite queue: a taken prompt names its worker; a lost worker's prompt is requeued once, then
failed; a worker that lost its lease cannot add a history entry; an older database file is migrated."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sdgraph.server.queue import PromptStore
from tests.server.nodes import chain

OK = {"outputs": {"3": {"text": ["1"]}}, "status": {"status_str": "success", "completed": True, "messages": []}}


def row(path: Path, prompt_id: str) -> tuple:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT state, worker, attempts FROM prompts WHERE prompt_id=?", (prompt_id,)).fetchone()


def test_a_taken_prompt_carries_its_worker_and_attempt(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    store = PromptStore(path)
    store.put("a", chain(1), {}, ["3"])
    item = store.take(0, worker="w1")
    assert (item.worker, item.attempts) == ("w1", 1)
    assert row(path, "a") == ("running", "w1", 1)
    assert store.finish("a", OK, worker="w1")
    assert row(path, "a") == ("done", "w1", 1)


def test_a_lost_worker_s_prompt_is_requeued_once_then_failed(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    store = PromptStore(path)
    store.put("a", chain(1), {}, ["3"])
    store.put("b", chain(2), {}, ["3"])
    assert store.take(0, worker="w1").prompt_id == "a"
    assert store.lost("a", "w1", "the process exited with -9") is None  # requeued, at its place
    assert row(path, "a") == ("pending", None, 1)
    assert [item.prompt_id for item in store.snapshot()[1]] == ["a", "b"]
    again = store.take(0, worker="w2")
    assert (again.prompt_id, again.attempts) == ("a", 2)
    error = store.lost("a", "w2", "the process exited with -11")
    assert error is not None and error["exception_type"] == "sdgraph.WorkerLost"
    assert "lost (the process exited with -11; last on worker w2), 2 times" in error["exception_message"]
    history = store.history()
    assert list(history) == ["a"]
    assert history["a"]["status"]["status_str"] == "error"
    assert history["a"]["status"]["messages"] == [["execution_error", error]]
    assert store.take(0, worker="w2").prompt_id == "b"  # the queue goes on


def test_a_worker_without_the_lease_cannot_finish(tmp_path: Path) -> None:
    store = PromptStore(tmp_path / "q.sqlite3")
    store.put("a", chain(1), {}, ["3"])
    store.take(0, worker="w1")
    store.lost("a", "w1", "it stopped answering")
    store.take(0, worker="w2")
    assert store.lost("a", "w1", "late news") is None  # w1 no longer holds it: nothing happens
    assert store.is_running("a")
    assert not store.finish("a", OK, worker="w1")  # the given-up worker's late result
    assert store.history() == {}
    assert store.finish("a", OK, worker="w2")
    assert list(store.history()) == ["a"] and not store.finish("a", OK, worker="w2")
    assert list(store.history()) == ["a"]


def test_pick_chooses_among_the_oldest_pending(tmp_path: Path) -> None:
    store = PromptStore(tmp_path / "q.sqlite3")
    for name in "abc":
        store.put(name, chain(ord(name)), {}, ["3"])
    seen: list[list[str]] = []

    def pick(window):
        seen.append([item.prompt_id for item in window])
        return next((item for item in window if item.prompt_id == "b"), None)

    assert store.take(0, worker="w", pick=pick).prompt_id == "b"
    assert seen == [["a", "b", "c"]]
    assert store.take(0.1, worker="w", pick=pick) is None  # nothing it wants: it waits, then gives up
    assert [item.prompt_id for item in store.snapshot()[1]] == ["a", "c"]
    assert store.take(0).prompt_id == "a"  # the plain order skips the picked one
    assert store.take(0).prompt_id == "c"


def test_an_older_database_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the first schema: no attempts, secrets or worker
        db.executescript("""
            CREATE TABLE prompts (prompt_id TEXT PRIMARY KEY, number REAL NOT NULL, seq INTEGER NOT NULL,
                state TEXT NOT NULL, client_id TEXT, prompt TEXT NOT NULL, extra_data TEXT NOT NULL,
                outputs_to_execute TEXT NOT NULL, result TEXT, finished INTEGER);
            CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);""")
        db.execute("INSERT INTO prompts VALUES ('old', 0, 1, 'pending', NULL, ?, '{}', '[\"3\"]', NULL, NULL)",
                   (json.dumps(chain(7)),))
        db.execute("INSERT INTO prompts VALUES ('was-running', 1, 2, 'running', NULL, ?, '{}', '[\"3\"]', NULL, NULL)",
                   (json.dumps(chain(8)),))
    store = PromptStore(path)
    with sqlite3.connect(path) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(prompts)")}
    assert {"attempts", "secrets", "worker"} <= columns
    assert [item.prompt_id for item in store.snapshot()[1]] == ["old", "was-running"]
    item = store.take(0, worker="w1")
    assert (item.prompt_id, item.prompt["1"]["inputs"]["value"]) == ("old", 7)
    assert row(path, "old") == ("running", "w1", 1)
    store.close_db()


def test_prompts_claimed_out_of_turn_for_a_batch_are_leased_to_the_worker_too(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    store = PromptStore(path)
    for name, value in (("a", 1), ("b", 2), ("c", 3)):
        store.put(name, chain(value), {}, ["3"])
    assert store.take(0, worker="w1").prompt_id == "a"
    assert [item.prompt_id for item in store.peek_pending(5)] == ["b", "c"]
    claimed = store.claim(["c", "gone"], worker="w1")
    assert [(item.prompt_id, item.worker, item.attempts) for item in claimed] == [("c", "w1", 1)]
    assert row(path, "c") == ("running", "w1", 1) and row(path, "b")[0] == "pending"
    assert store.finish("c", OK, worker="w1")
