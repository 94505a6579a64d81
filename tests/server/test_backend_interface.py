"""The worker backend interface: the in-process worker is one, /system_stats lists it, another can be plugged in."""
from __future__ import annotations

import os

from aiohttp.test_utils import TestClient, TestServer

from sdgraph.server import ServerConfig, create_app
from sdgraph.server.backend import WorkerBackend
from sdgraph.server.worker import Worker
from tests.server.conftest import Harness
from tests.server.nodes import chain, gate, make_executor


async def test_system_stats_lists_the_in_process_worker(server: Harness) -> None:
    assert isinstance(server.state.worker, Worker) and isinstance(server.state.worker, WorkerBackend)
    await server.submit(chain(0, middle="Gate", name="stats"), prompt_id="held")
    await server.wait_running("held")
    stats = await (await server.client.get("/system_stats")).json()
    gate("stats").set()
    [worker] = stats["workers"]
    assert worker["kind"] == "in-process" and worker["pid"] == os.getpid()
    assert worker["state"] == "running" and worker["prompt_id"] == "held" and worker["alive"]
    assert "devices" in stats and "system" in stats  # the ecosystem's keys stay


class Recording:
    """A stand-in backend: records what the server asks of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 10.0) -> None:
        self.calls.append("stop")

    @property
    def alive(self) -> bool:
        return self.started

    def interrupt(self, prompt_id: str | None = None) -> bool:
        self.calls.append(f"interrupt {prompt_id}")
        return True

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        self.calls.append(f"free {unload_models} {free_memory}")

    def describe(self) -> list[dict]:
        return [{"name": "r0", "kind": "recording"}]


async def test_the_server_talks_to_a_plugged_in_backend(tmp_path) -> None:
    backend = Recording()
    app = create_app(make_executor(tmp_path / "b"), ServerConfig(probe_torch=False),
                     backend=lambda executor, store, hub: backend)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        assert backend.started
        assert await (await client.post("/interrupt", json={"prompt_id": "x"})).json() == {"interrupted": True}
        await client.post("/free", json={"unload_models": True})
        stats = await (await client.get("/system_stats")).json()
        assert stats["workers"] == [{"name": "r0", "kind": "recording"}]
    assert backend.calls == ["interrupt x", "free True False", "stop"]
