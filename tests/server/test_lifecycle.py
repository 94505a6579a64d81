"""The prompt lifecycle through the server: history before the end, no zombies, crash containment, queue bounds,
credentials kept out of sight."""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import stat
import subprocess

from sdgraph.server import ServerConfig
from sdgraph.server.queue import MAX_ATTEMPTS, PromptStore, QueueFull
from tests.server.conftest import Harness, receive_until_done
from tests.server.nodes import chain, gate

import pytest


async def test_history_is_written_before_the_end_is_announced(server: Harness) -> None:
    """What ComfyUI's example client does: wait for `executing: null`, then read /history/{id} at once."""
    ws = await server.ws("reader")
    for i in range(60):
        pid = (await server.submit(chain(i), client_id="reader"))["prompt_id"]
        await receive_until_done(ws, pid)
        history = await (await server.client.get(f"/history/{pid}")).json()
        assert pid in history, f"run {i}: history missing right after executing: null"
        assert history[pid]["outputs"] == {"3": {"text": [str(i)]}}
    await ws.close()


async def test_an_unrecordable_result_ends_as_an_error_not_a_zombie(server: Harness) -> None:
    ws = await server.ws("z")
    pid = (await server.submit(chain(1, middle=None) | {"3": {"class_type": "Unserialisable",
                                                              "inputs": {"value": ["1", 0]}}},
                               client_id="z"))["prompt_id"]
    events = await receive_until_done(ws, pid)
    kinds = [kind for kind, data in events if kind != "status"]
    assert kinds[-2:] == ["execution_error", "executing"]
    entry = (await (await server.client.get(f"/history/{pid}")).json())[pid]
    assert entry["status"]["status_str"] == "error"
    assert "could not be recorded" in entry["status"]["messages"][-1][1]["exception_message"]
    assert (await (await server.client.get("/prompt")).json())["exec_info"]["queue_remaining"] == 0
    # The server goes on serving.
    after = (await server.submit(chain(2)))["prompt_id"]
    assert (await server.wait_done(after))["outputs"] == {"3": {"text": ["2"]}}
    await ws.close()


async def test_a_prompt_invalid_by_the_time_it_runs_fails_with_its_node_errors(server: Harness) -> None:
    hold = (await server.submit(chain(0, middle="Gate", name="hold-inv")))["prompt_id"]
    await server.wait_running(hold)
    pid = (await server.submit(chain(5)))["prompt_id"]
    server.state.executor.registry.nodes.pop("Show")  # the pack is gone by the time it runs
    gate("hold-inv").set()
    entry = await server.wait_done(pid)
    kind, error = entry["status"]["messages"][-1]
    assert kind == "execution_error" and "Show" in json.dumps(error)


async def test_queue_cap_answers_429_and_loses_nothing(make_server) -> None:
    server = await make_server(ServerConfig(max_queue=2))
    hold = (await server.submit(chain(0, middle="Gate", name="cap")))["prompt_id"]
    await server.wait_running(hold)
    for i in range(2):
        await server.submit(chain(i), prompt_id=f"q{i}")
    resp = await server.client.post("/prompt", json={"prompt": chain(9), "prompt_id": "over"})
    body = await resp.json()
    assert resp.status == 429 and body["error"]["type"] == "queue_full" and "limit is 2" in body["error"]["message"]
    gate("cap").set()
    assert server.state.store.wait_idle(10)
    history = await (await server.client.get("/history")).json()
    assert set(history) == {hold, "q0", "q1"}
    assert (await server.submit(chain(3), prompt_id="over"))["prompt_id"] == "over"  # room again


def test_queue_byte_bound(tmp_path) -> None:
    store = PromptStore(tmp_path / "q.sqlite3", max_pending_bytes=600)
    store.put("a", chain(1), {}, ["3"])
    with pytest.raises(QueueFull, match="bytes"):
        store.put("b", chain(2) | {"9": {"class_type": "Number", "inputs": {"value": 1, "x": "y" * 500}}}, {},
                  ["3"])
    store.delete_pending(["a"])
    store.put("c", chain(3), {}, ["3"])  # deleting freed the bytes


def test_pending_prompts_are_held_as_text(tmp_path) -> None:
    store = PromptStore(tmp_path / "q.sqlite3")
    prompt = chain(7)
    item = store.put("a", prompt, {"client_id": "c"}, ["3"])
    assert isinstance(item.prompt_json, str) and item.prompt == prompt
    entry = json.loads(item.as_json())
    assert entry == [0, "a", prompt, {"client_id": "c"}, ["3"]]


def test_a_prompt_that_kills_the_process_is_retried_once_then_failed(tmp_path) -> None:
    db = tmp_path / "q.sqlite3"
    store = PromptStore(db)
    store.put("killer", chain(1), {}, ["3"])
    store.put("behind", chain(2), {}, ["3"])
    for attempt in range(1, MAX_ATTEMPTS + 1):
        store = PromptStore(db)  # a restart after the process died
        assert [item.prompt_id for item in store.snapshot()[1]] == ["killer", "behind"]
        item = store.take(0)
        assert item.prompt_id == "killer" and item.attempts == attempt  # ... and it dies again here
    store = PromptStore(db)
    assert [item.prompt_id for item in store.snapshot()[1]] == ["behind"]
    entry = store.history_item("killer")["killer"]
    assert entry["status"]["status_str"] == "error"
    message = entry["status"]["messages"][-1][1]["exception_message"]
    assert "stopped while running this prompt, 2 times" in message
    assert store.take(0).prompt_id == "behind"


def test_a_clean_stop_does_not_count_as_an_attempt(tmp_path) -> None:
    db = tmp_path / "q.sqlite3"
    store = PromptStore(db)
    store.put("a", chain(1), {}, ["3"])
    for _ in range(MAX_ATTEMPTS + 1):
        store = PromptStore(db)
        store.take(0)
        store.requeue("a")
    assert PromptStore(db).take(0).attempts == 1


def test_an_old_database_gains_the_new_columns(tmp_path) -> None:
    db = tmp_path / "old.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            "CREATE TABLE prompts (prompt_id TEXT PRIMARY KEY, number REAL NOT NULL, seq INTEGER NOT NULL, "
            "state TEXT NOT NULL, client_id TEXT, prompt TEXT NOT NULL, extra_data TEXT NOT NULL, "
            "outputs_to_execute TEXT NOT NULL, result TEXT, finished INTEGER);"
            "INSERT INTO prompts VALUES ('old', 0, 1, 'pending', NULL, '{}', '{}', '[]', NULL, NULL);")
    store = PromptStore(db)
    assert [item.prompt_id for item in store.snapshot()[1]] == ["old"]
    assert store.take(0).attempts == 1


async def test_credentials_never_reach_the_history_and_the_database_is_private(make_server, tmp_path) -> None:
    db = tmp_path / "private.sqlite3"
    server = await make_server(ServerConfig(db_path=db))
    secret = "sk-very-secret-value"
    hold = (await server.submit(chain(0, middle="Gate", name="sec")))["prompt_id"]
    await server.wait_running(hold)
    pid = (await server.submit(chain(1), extra_data={"api_key_comfy_org": secret, "note": "kept"}))["prompt_id"]
    queue = await (await server.client.get("/queue")).text()
    assert secret not in queue and "kept" in queue
    store = server.state.store
    assert store.snapshot()[1][0].extra_data["api_key_comfy_org"] == secret  # the run still gets it
    gate("sec").set()
    entry = await server.wait_done(pid)
    assert secret not in json.dumps(entry)
    await asyncio.sleep(0)
    with sqlite3.connect(db) as conn:
        dumped = "\n".join(conn.iterdump())
    assert secret not in dumped  # cleared from its row once the prompt finished
    for suffix in ("", "-wal", "-shm"):
        path = db.with_name(db.name + suffix)
        if path.exists():
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (needs root), and a way to fill it up and to free it again."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory) -> None:
    with open(directory / "filler", "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError:
            pass


async def test_a_full_disk_fails_runs_cleanly_refuses_submissions_with_507_and_recovers(make_server,
                                                                                        small_disk) -> None:
    server = await make_server(ServerConfig(db_path=small_disk / "q.sqlite3"))
    assert (await server.wait_done((await server.submit(chain(1)))["prompt_id"]))["outputs"]
    ws = await server.ws("full")
    hold = (await server.submit(chain(0, middle="Gate", name="disk"), client_id="full"))["prompt_id"]
    await server.wait_running(hold)
    fill(small_disk)
    resp = await server.client.post("/prompt", json={"prompt": chain(2)})
    assert resp.status == 507 and "full" in (await resp.json())["error"]["message"]
    gate("disk").set()
    events = await receive_until_done(ws, hold)  # its history cannot be written, but its end is announced
    assert [kind for kind, _ in events if kind != "status"][-2:] == ["execution_error", "executing"]
    assert (await (await server.client.get("/prompt")).json())["exec_info"]["queue_remaining"] == 0
    (small_disk / "filler").unlink()
    after = (await server.submit(chain(3)))["prompt_id"]
    assert (await server.wait_done(after))["outputs"] == {"3": {"text": ["3"]}}
    await ws.close()
