"""A real server on a loopback port, run by its own event loop in a thread, for synchronous clients."""
from __future__ import annotations

import asyncio
import http.client
import json
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from sdgraph.execute import Executor
from sdgraph.server import ServerConfig, create_app
from sdgraph.server.state import STATE, ServerState


class LiveServer:
    def __init__(self, executor: Executor, config: ServerConfig | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-server", daemon=True)
        self.thread.start()
        self.app = create_app(executor, config or ServerConfig(probe_torch=False))
        self.runner = web.AppRunner(self.app, access_log=None)
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        self._conn: http.client.HTTPConnection | None = None

    async def _start(self) -> int:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def state(self) -> ServerState:
        return self.app[STATE]

    @property
    def base(self) -> Path:
        return self.state.dirs.base

    def request(self, method: str, target: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self._conn.request(method, target, body=body, headers=headers or {})
                resp = self._conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self._conn.close()
                    self._conn = None
                return resp.status, data
            except (ConnectionError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def post_json(self, target: str, value: Any) -> tuple[int, bytes]:
        return self.request("POST", target, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
