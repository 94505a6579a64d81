"""The WebSocket event sequences of a run, a cached run, an error, an interrupt; the worker survives failures."""
from __future__ import annotations

import struct

from tests.server.conftest import Harness, for_prompt, receive_until_done, receive_until_executing
from tests.server.nodes import chain, gate


def types(events: list) -> list:
    return [(t, d.get("node")) if t in ("executing", "executed") else t for t, d in events]


async def test_run_then_cached_run(server: Harness) -> None:
    ws = await server.ws("alice")
    reply = await server.submit(chain(5), client_id="alice")
    assert reply["node_errors"] == {} and reply["number"] == 0
    pid = reply["prompt_id"]
    events = await receive_until_done(ws, pid)
    assert events[0][0] == "status"  # the queue changed
    run = for_prompt(events, pid)
    assert types(run) == ["execution_start", "execution_cached", ("executing", "1"), ("executing", "3"),
                          ("executed", "3"), "execution_success", ("executing", None)]
    assert run[1][1]["nodes"] == []
    executed = dict(run)["executed"]
    assert executed["output"] == {"text": ["5"]} and executed["display_node"] == "3"

    again = (await server.submit(chain(5), client_id="alice"))["prompt_id"]
    run = for_prompt(await receive_until_done(ws, again), again)
    assert types(run) == ["execution_start", "execution_cached", ("executed", "3"), "execution_success",
                          ("executing", None)]
    assert sorted(run[1][1]["nodes"]) == ["1", "3"]

    entry = await server.wait_done(pid)
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert entry["outputs"] == {"3": {"text": ["5"]}}
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached",
                                                           "execution_success"]
    assert entry["prompt"][1] == pid and entry["prompt"][4] == ["3"]
    status = await ws.receive_json(timeout=5)  # after the run: the queue is empty again
    assert status == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}
    await ws.close()


async def test_error_then_worker_runs_on(server: Harness) -> None:
    ws = await server.ws("bob")
    pid = (await server.submit(chain(1, middle="Fail", message="kaput"), client_id="bob"))["prompt_id"]
    run = for_prompt(await receive_until_done(ws, pid), pid)
    assert types(run) == ["execution_start", "execution_cached", ("executing", "1"), ("executing", "2"),
                          "execution_error", ("executing", None)]
    error = dict(run)["execution_error"]
    assert error["node_id"] == "2" and error["node_type"] == "Fail"
    assert error["exception_message"] == "kaput" and error["exception_type"] == "RuntimeError"
    assert error["traceback"] and error["executed"] == ["1"]
    entry = await server.wait_done(pid)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False

    ok = (await server.submit(chain(2), client_id="bob"))["prompt_id"]
    assert (await server.wait_done(ok))["status"]["status_str"] == "success"
    await ws.close()


class FakeModels:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def unload_all(self) -> None:
        self.calls.append("unload_all")

    def free_memory(self) -> None:
        self.calls.append("free_memory")


async def test_out_of_memory_and_system_exit_do_not_kill_the_worker(make_server) -> None:
    models = FakeModels()
    server = await make_server(models=models)
    oom = (await server.submit(chain(1, middle="OutOfMemory")))["prompt_id"]
    entry = await server.wait_done(oom)
    error = dict(entry["status"]["messages"])["execution_error"]
    assert error["exception_type"] == "MemoryError"
    exit_ = (await server.submit(chain(1, middle="Exit")))["prompt_id"]
    entry = await server.wait_done(exit_)
    assert dict(entry["status"]["messages"])["execution_error"]["exception_type"] == "SystemExit"
    ok = (await server.submit(chain(9)))["prompt_id"]
    assert (await server.wait_done(ok))["outputs"] == {"3": {"text": ["9"]}}
    assert server.state.worker.alive
    assert "unload_all" in models.calls  # out of memory: the worker unloaded models before going on


async def test_free_asks_the_model_manager_between_prompts(make_server) -> None:
    models = FakeModels()
    server = await make_server(models=models)
    await server.submit(chain(4))
    resp = await server.client.post("/free", json={"unload_models": True, "free_memory": True})
    assert resp.status == 200
    for _ in range(200):
        if "free_memory" in models.calls:
            break
        import asyncio

        await asyncio.sleep(0.01)
    assert models.calls == ["unload_all", "free_memory"]
    assert len(server.state.executor.cache) == 0


async def test_interrupt(server: Harness) -> None:
    ws = await server.ws("carol")
    pid = (await server.submit(chain(1, middle="Gate", name="never"), client_id="carol"))["prompt_id"]
    before = await receive_until_executing(ws, pid, "2")  # the gate holds the worker now
    # Another prompt's id interrupts nothing.
    resp = await server.client.post("/interrupt", json={"prompt_id": "someone-else"})
    assert (await resp.json()) == {"interrupted": False}
    resp = await server.client.post("/interrupt", json={"prompt_id": pid})
    assert (await resp.json()) == {"interrupted": True}
    run = for_prompt(before + await receive_until_done(ws, pid), pid)
    assert types(run)[-2:] == ["execution_interrupted", ("executing", None)]
    assert dict(run)["execution_interrupted"]["node_id"] == "2"
    entry = await server.wait_done(pid)
    assert entry["status"]["status_str"] == "error"
    assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"
    # A plain interrupt (no body), then the worker carries on.
    second = (await server.submit(chain(2, middle="Gate", name="never2"), client_id="carol"))["prompt_id"]
    await server.wait_running(second)
    assert (await (await server.client.post("/interrupt")).json()) == {"interrupted": True}
    await server.wait_done(second)
    ok = (await server.submit(chain(3)))["prompt_id"]
    assert (await server.wait_done(ok))["status"]["status_str"] == "success"
    await ws.close()


async def test_progress_and_binary_previews(server: Harness) -> None:
    ws = await server.ws("dave")
    pid = (await server.submit(chain(1, middle="Previewer"), client_id="dave"))["prompt_id"]
    events = await receive_until_done(ws, pid)
    progress = [d for t, d in events if t == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 2, "2"), (2, 2, "2")]
    frames = [d for t, d in events if t == "binary"]
    assert len(frames) == 2
    assert struct.unpack(">II", frames[0][:8]) == (1, 2) and frames[0][8:12] == b"\x89PNG"
    assert struct.unpack(">II", frames[1][:8]) == (1, 1) and frames[1][8:10] == b"\xff\xd8"
    await ws.close()


async def test_events_go_to_the_submitting_client_only(server: Harness) -> None:
    alice = await server.ws("alice")
    eve = await server.ws("eve")
    pid = (await server.submit(chain(7), client_id="alice"))["prompt_id"]
    await receive_until_done(alice, pid)
    await server.wait_done(pid)
    seen = []
    while True:
        try:
            seen.append(await eve.receive_json(timeout=0.3))
        except TimeoutError:
            break
    assert seen and {frame["type"] for frame in seen} == {"status"}  # eve sees the queue, not alice's run
    await alice.close()
    await eve.close()


async def test_reconnect_with_same_client_id_takes_over(server: Harness) -> None:
    first = await server.ws("frank")
    second = await server.ws("frank")
    pid = (await server.submit(chain(8), client_id="frank"))["prompt_id"]
    assert for_prompt(await receive_until_done(second, pid), pid)[-2][0] == "execution_success"
    await first.close()
    await second.close()


async def test_queue_is_responsive_while_a_prompt_runs(server: Harness) -> None:
    pid = (await server.submit(chain(1, middle="Gate", name="hold")))["prompt_id"]
    await server.wait_running(pid)
    for _ in range(20):
        resp = await server.client.get("/queue")
        data = await resp.json()
        assert [item[1] for item in data["queue_running"]] == [pid]
    gate("hold").set()
    await server.wait_done(pid)
