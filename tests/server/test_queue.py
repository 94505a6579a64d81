"""Queue order and `front`, deleting and clearing, history paging, and persistence across a restart."""
from __future__ import annotations

from sdgraph.server import ServerConfig
from tests.server.conftest import Harness
from tests.server.nodes import chain, gate


async def pending_ids(server: Harness) -> list[str]:
    data = await (await server.client.get("/queue")).json()
    return [item[1] for item in data["queue_pending"]]


async def test_queue_order_front_and_number(server: Harness) -> None:
    hold = (await server.submit(chain(0, middle="Gate", name="hold"), prompt_id="hold"))["prompt_id"]
    await server.wait_running(hold)
    for name in ("b", "c"):
        await server.submit(chain(ord(name)), prompt_id=name)
    reply = await server.submit(chain(100), prompt_id="front", front=True)
    assert reply["number"] < 0
    await server.submit(chain(101), prompt_id="explicit", number=0.5)
    assert await pending_ids(server) == ["front", "explicit", "b", "c"]
    data = await (await server.client.get("/queue")).json()
    running = data["queue_running"][0]
    assert running[1] == "hold" and running[2]["2"]["class_type"] == "Gate" and running[4] == ["3"]
    assert (await (await server.client.get("/prompt")).json()) == {"exec_info": {"queue_remaining": 5}}
    gate("hold").set()
    assert server.state.store.wait_idle(10)
    history = await (await server.client.get("/history")).json()
    assert list(history) == ["hold", "front", "explicit", "b", "c"]


async def test_delete_and_clear_pending(server: Harness) -> None:
    hold = (await server.submit(chain(0, middle="Gate", name="hold2"), prompt_id="h"))["prompt_id"]
    await server.wait_running(hold)
    for i in range(4):
        await server.submit(chain(i + 10), prompt_id=f"p{i}")
    resp = await server.client.post("/queue", json={"delete": ["p1", "p3", "unknown", "h"]})
    assert (await resp.json()) == {"cleared": 0, "deleted": 2}
    assert await pending_ids(server) == ["p0", "p2"]
    resp = await server.client.post("/api/queue", json={"clear": True})
    assert (await resp.json())["cleared"] == 2
    assert await pending_ids(server) == []
    gate("hold2").set()
    assert server.state.store.wait_idle(10)
    assert list(await (await server.client.get("/history")).json()) == ["h"]


async def test_history_paging_and_deletion(server: Harness) -> None:
    ids = [(await server.submit(chain(i), prompt_id=f"run{i}"))["prompt_id"] for i in range(6)]
    assert server.state.store.wait_idle(10)

    async def page(**query: int) -> list[str]:
        resp = await server.client.get("/history", params={k: str(v) for k, v in query.items()})
        assert resp.status == 200
        return list(await resp.json())

    assert await page() == ids
    assert await page(max_items=2) == ids[-2:]
    assert await page(max_items=2, offset=0) == ids[:2]
    assert await page(max_items=3, offset=2) == ids[2:5]
    assert await page(max_items=10, offset=4) == ids[4:]
    assert await page(offset=5) == ids[5:]
    assert await page(max_items=0) == []
    for bad in ({"max_items": "x"}, {"max_items": "-1"}, {"offset": "-2"}):
        assert (await server.client.get("/history", params=bad)).status == 400
    one = await (await server.client.get("/history/run3")).json()
    assert list(one) == ["run3"] and one["run3"]["outputs"] == {"3": {"text": ["3"]}}
    assert await (await server.client.get("/history/nope")).json() == {}
    await server.client.post("/history", json={"delete": ["run0", "run1"]})
    assert await page() == ids[2:]
    await server.client.post("/history", json={"clear": True})
    assert await page() == []


async def test_restart_keeps_history_and_resumes_pending(make_server, tmp_path) -> None:
    db = tmp_path / "q.sqlite3"
    first = await make_server(ServerConfig(db_path=db))
    done = (await first.submit(chain(1), prompt_id="done"))["prompt_id"]
    await first.wait_done(done)
    await first.submit(chain(2, middle="Gate", name="stuck"), prompt_id="running")
    await first.wait_running("running")
    for i in range(3):
        await first.submit(chain(30 + i), prompt_id=f"later{i}")
    await first.client.close()  # a clean stop interrupts the running prompt and puts it back in the queue
    assert not first.state.worker.alive
    second = await make_server(ServerConfig(db_path=db), base=tmp_path / "other")
    gate("stuck").set()
    assert second.state.store.wait_idle(10)
    history = await (await second.client.get("/history")).json()
    assert list(history) == ["done", "running", "later0", "later1", "later2"]
    assert history["done"]["outputs"] == {"3": {"text": ["1"]}}
    assert history["later2"]["outputs"] == {"3": {"text": ["32"]}}
    # Numbers continue after the restart: no clash with the old ones.
    reply = await second.submit(chain(5))
    assert reply["number"] == 5


def test_a_prompt_running_at_a_crash_goes_back_to_pending(tmp_path) -> None:
    from sdgraph.server.queue import PromptStore

    store = PromptStore(tmp_path / "q.sqlite3")
    store.put("a", chain(1), {}, ["3"])
    store.put("b", chain(2), {}, ["3"])
    store.put("c", chain(3), {}, ["3"], front=True)
    assert store.take(0).prompt_id == "c"
    store.finish("c", {"outputs": {}, "status": {"status_str": "success"}})
    assert store.take(0).prompt_id == "a"  # running when the process "dies": never finished, never closed
    reopened = PromptStore(tmp_path / "q.sqlite3")
    running, pending = reopened.snapshot()
    assert running == [] and [item.prompt_id for item in pending] == ["a", "b"]
    assert list(reopened.history()) == ["c"]
    assert reopened.put("d", chain(4), {}, ["3"]).number == 3


async def test_history_is_bounded(make_server) -> None:
    server = await make_server(ServerConfig(max_history=3))
    for i in range(5):
        await server.submit(chain(i), prompt_id=f"h{i}")
    assert server.state.store.wait_idle(10)
    assert list(await (await server.client.get("/history")).json()) == ["h2", "h3", "h4"]
