"""Connection limits: what aiohttp's own knobs do not cover.

aiohttp closes a connection that has not sent a whole request head within `keepalive_timeout` of connecting (or
of its last response), so that knob is the head timeout. Missing are a cap on open connections and a timeout for
a request body that stops arriving. `ConnectionGuard` adds both: its middleware notes which connections have a
request in progress, and a sweep every SWEEP_S closes stalled bodies and, over the cap, the oldest connections
that have no request in progress (half-open or idle ones), so fresh clients always get in.
"""
from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("sdgraph.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SWEEP_S = 0.5
SPARE_FILES = 128  # descriptors kept free for the database, uploads and model files


@dataclass
class _Body:
    request: web.Request
    received: int  # body bytes seen at the last sweep
    since: float  # when that count last changed


class ConnectionGuard:
    def __init__(self, max_connections: int, body_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.body_timeout_s = body_timeout_s
        self._busy: dict[object, _Body] = {}  # transport -> the request it is serving
        self._first_seen: dict[web.RequestHandler, float] = {}

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        if transport is None:
            return await handler(request)
        self._busy[transport] = _Body(request, request.content.total_bytes, asyncio.get_running_loop().time())
        try:
            return await handler(request)
        finally:
            self._busy.pop(transport, None)

    async def run(self, server: web.Server) -> None:
        """Sweep until cancelled."""
        while True:
            await asyncio.sleep(SWEEP_S)
            self.sweep(server.connections, asyncio.get_running_loop().time())

    def sweep(self, connections: list[web.RequestHandler], now: float) -> None:
        self._cut_stalled_bodies(now)
        connections = [h for h in connections if h.transport is not None]  # closed ones linger a moment
        for handler in connections:
            self._first_seen.setdefault(handler, now)
        live = set(connections)
        for handler in [h for h in self._first_seen if h not in live]:
            del self._first_seen[handler]
        excess = len(connections) - self.max_connections
        if excess > 0:
            idle = [h for h in connections if h.transport not in self._busy]
            idle.sort(key=self._first_seen.__getitem__)
            for handler in idle[:excess]:
                handler.force_close()
            if idle:
                log.warning("%d connections open, over the cap of %d: closed the %d oldest idle ones",
                            len(connections), self.max_connections, min(excess, len(idle)))

    def _cut_stalled_bodies(self, now: float) -> None:
        for transport, body in list(self._busy.items()):
            content = body.request.content
            if content.is_eof():
                continue
            if content.total_bytes != body.received:
                body.received, body.since = content.total_bytes, now
            elif now - body.since > self.body_timeout_s:
                log.info("closing a connection whose request body stalled for %.0f s", now - body.since)
                del self._busy[transport]
                transport.close()  # type: ignore[attr-defined]


def raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the open-file limit from %d to %d", soft, target)
    return soft


def connection_cap(wanted: int, open_files: int) -> int:
    """The cap that leaves SPARE_FILES descriptors free whatever the clients do."""
    if open_files == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, open_files - SPARE_FILES))
