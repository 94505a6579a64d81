"""A real aiohttp server (TestServer on loopback) over an executor with the pure-Python test nodes."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient, TestServer

from sdgraph.execute import Executor
from sdgraph.server import ServerConfig, create_app
from sdgraph.server.state import STATE, ServerState
from tests.server import nodes
from tests.server.nodes import make_executor

TERMINAL = ("execution_success", "execution_error", "execution_interrupted")


@dataclass
class Harness:
    client: TestClient
    base: Path
    events: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)

    @property
    def state(self) -> ServerState:
        return self.client.server.app[STATE]

    async def submit(self, prompt: dict[str, Any], **body: Any) -> dict[str, Any]:
        resp = await self.client.post("/prompt", json={"prompt": prompt, **body})
        data = await resp.json()
        assert resp.status == 200, data
        return data

    async def ws(self, client_id: str = "tester", **params: str) -> ClientWebSocketResponse:
        ws = await self.client.ws_connect("/ws", params={"clientId": client_id, **params})
        first = await ws.receive_json(timeout=5)
        assert first["type"] == "status" and first["data"]["sid"] == client_id
        return ws

    async def wait_done(self, prompt_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            resp = await self.client.get(f"/history/{prompt_id}")
            data = await resp.json()
            if prompt_id in data:
                return data[prompt_id]
            await asyncio.sleep(0.01)
        raise AssertionError(f"prompt {prompt_id} never finished")

    async def wait_running(self, prompt_id: str, timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if self.state.store.is_running(prompt_id):
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"prompt {prompt_id} never started")


async def receive_until_done(ws: ClientWebSocketResponse, prompt_id: str,
                             timeout: float = 10.0) -> list[tuple[str, Any]]:
    """Frames up to and including `executing` with node None for this prompt. Binary frames as ('binary', b)."""
    return await receive_until_executing(ws, prompt_id, None, timeout)


async def receive_until_executing(ws: ClientWebSocketResponse, prompt_id: str, node: str | None,
                                  timeout: float = 10.0) -> list[tuple[str, Any]]:
    """Frames up to and including `executing` of `node` (None: the end) for this prompt."""
    seen: list[tuple[str, Any]] = []
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == WSMsgType.BINARY:
            seen.append(("binary", msg.data))
            continue
        assert msg.type == WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        seen.append((frame["type"], frame["data"]))
        data = frame["data"]
        if frame["type"] == "executing" and data.get("node") == node and data.get("prompt_id") == prompt_id:
            return seen


async def raw_request(harness: Harness, method: str, target: str, headers: dict[str, str] | None = None,
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request written byte for byte (no client-side URL normalisation): (status, headers, body)."""
    port = harness.client.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = {"Host": f"127.0.0.1:{port}", "Connection": "close", "Content-Length": str(len(body)), **(headers or {})}
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
    writer.write("\r\n".join(lines).encode("latin-1") + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    header_blob, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = header_blob.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines if ":" in line)}
    return int(status_line.split()[1]), parsed, payload


def for_prompt(events: list[tuple[str, Any]], prompt_id: str) -> list[tuple[str, Any]]:
    return [(t, d) for t, d in events if t not in ("status", "binary") and d.get("prompt_id") == prompt_id]


Factory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[Factory]:
    clients: list[TestClient] = []

    async def factory(config: ServerConfig | None = None, *, base: Path | None = None, models: Any = None,
                      executor: Executor | None = None) -> Harness:
        base = base or tmp_path / "base"
        config = config or ServerConfig(probe_torch=False)
        config.probe_torch = False
        app = create_app(executor or make_executor(base, models), config)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return Harness(client, base)

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def server(make_server: Factory) -> Harness:
    return await make_server()


@pytest.fixture(autouse=True)
def _reset_gates() -> None:
    nodes.GATES.clear()
