"""The WebSocket hub: `/ws?clientId=` connections and the messages sent to them.

Text frames are `{"type", "data"}`; a latent preview is a binary frame: a big-endian u32 event type (1), a u32
image format (1 = JPEG, 2 = PNG), then the image bytes. Execution events go to the client that submitted the
prompt (all clients when it gave no client_id); `status` goes to everyone. Worker threads hand frames over with
`post`, which is thread-safe; each client has its own outbox (bounded by bytes, see outbox.py) and sender task.
A client that lags gets the latest progress, status and preview instead of every one; a client that does not
read at all is closed once its outbox is full.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import struct
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from aiohttp import WSMsgType, web

from sdgraph.server.outbox import Outbox

log = logging.getLogger("sdgraph.server")

PREVIEW_IMAGE = 1
FORMATS = {"JPEG": 1, "PNG": 2}
OUTBOX_BYTES = 16 * 1024 * 1024  # per client: some 150,000 execution events
PREVIEW_KEY = ("preview",)
STATUS_INTERVAL_S = 0.05
MAX_CLIENT_ID = 128

Frame = str | bytes
STATUS = object()  # stands for "the current status", computed when it is sent


class TextFrame(str):
    """A text frame; `key` names the kind of frame a newer one with the same key supersedes (None: never)."""

    key: Hashable | None = None


def text_frame(event: str, data: dict[str, Any]) -> str:
    frame = TextFrame(json.dumps({"type": event, "data": data}, default=str))
    if event == "progress":
        frame.key = (event, data.get("prompt_id"), data.get("node"))
    elif event == "status" and "sid" not in data:
        frame.key = (event,)
    return frame


def frame_key(frame: Frame) -> Hashable | None:
    return PREVIEW_KEY if isinstance(frame, bytes) else getattr(frame, "key", None)


def preview_frame(image: Any) -> bytes | None:
    """Encode a preview, given as (format, bytes) or as a PIL image; None if it is neither."""
    if isinstance(image, (tuple, list)) and len(image) == 2 and isinstance(image[1], (bytes, bytearray)):
        fmt, payload = str(image[0]).upper(), bytes(image[1])
        if fmt not in FORMATS:
            return None
    elif hasattr(image, "save"):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
        fmt, payload = "JPEG", buffer.getvalue()
    else:
        return None
    return struct.pack(">II", PREVIEW_IMAGE, FORMATS[fmt]) + payload


@dataclass
class _Client:
    ws: web.WebSocketResponse
    outbox: Outbox
    sender: asyncio.Task[None] | None = None


class Hub:
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status  # the current status payload: {"status": {"exec_info": {...}}}
        self.clients: dict[str, _Client] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        # Frames from other threads wait here; one loop wake-up delivers all that arrived meanwhile.
        self._inbox: deque[tuple[Any, str | None]] = deque()
        self._inbox_lock = threading.Lock()
        self._drain_scheduled = False
        self._status_scheduled = False
        self._status_sent = float("-inf")

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    # ---- sending (loop thread) --------------------------------------------------------------------------

    def send(self, frame: Frame, sid: str | None = None) -> None:
        """Queue a frame for one client (or for all when sid is None)."""
        if sid is None:
            for client_sid, client in list(self.clients.items()):
                self._enqueue(client_sid, client, frame)
        elif sid in self.clients:
            self._enqueue(sid, self.clients[sid], frame)

    def _enqueue(self, sid: str, client: _Client, frame: Frame) -> None:
        if client.outbox.put(frame, frame_key(frame)) or isinstance(frame, bytes):
            return  # a slow client may miss a preview, never an event
        log.warning("websocket client %s is not reading (%d bytes unsent); closing it", sid, client.outbox.size)
        self._drop(sid, client)

    def send_status(self) -> None:
        """Broadcast the queue status, at most every STATUS_INTERVAL_S: a burst of changes sends the latest once."""
        if self._status_scheduled or self.loop is None:
            return
        self._status_scheduled = True
        delay = self._status_sent + STATUS_INTERVAL_S - self.loop.time()
        if delay > 0:
            self.loop.call_later(delay, self._flush_status)
        else:
            self._flush_status()  # now, so it precedes the frames queued after it

    def _flush_status(self) -> None:
        self._status_scheduled = False
        if self.loop is not None:
            self._status_sent = self.loop.time()
        self.send(text_frame("status", self.status()))

    # ---- sending (any thread) ---------------------------------------------------------------------------

    def post(self, frame: Any, sid: str | None = None) -> None:
        """Thread-safe `send`; `STATUS` as the frame broadcasts the status."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with self._inbox_lock:
            self._inbox.append((frame, sid))
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        try:
            loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass  # the loop closed meanwhile: shutting down

    def post_status(self) -> None:
        self.post(STATUS)

    def _drain(self) -> None:
        with self._inbox_lock:
            items = list(self._inbox)
            self._inbox.clear()
            self._drain_scheduled = False
        for frame, sid in items:
            if frame is STATUS:
                self.send_status()
            else:
                self.send(frame, sid)

    # ---- connections ------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        sid = request.query.get("clientId") or uuid.uuid4().hex
        if len(sid) > MAX_CLIENT_ID or not sid.isprintable():
            raise web.HTTPBadRequest(text="clientId must be at most 128 printable characters")
        # No per-message compression: frames are small JSON or already-compressed images, and latency matters.
        ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 20, compress=False)
        await ws.prepare(request)
        old = self.clients.pop(sid, None)
        if old is not None:
            self._drop(sid, old)
        client = _Client(ws, Outbox(OUTBOX_BYTES))
        client.sender = asyncio.ensure_future(self._sender(sid, client))
        self.clients[sid] = client
        status = self.status()
        status["sid"] = sid
        self._enqueue(sid, client, text_frame("status", status))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break  # clients have nothing to tell us; other messages are ignored
        finally:
            if self.clients.get(sid) is client:
                del self.clients[sid]
            if client.sender is not None:
                client.sender.cancel()
        return ws

    async def _sender(self, sid: str, client: _Client) -> None:
        ws = client.ws
        try:
            while True:
                frame = await client.outbox.get()
                while True:  # everything already queued goes out before waiting again
                    if isinstance(frame, str):
                        await ws.send_str(frame)
                    else:
                        await ws.send_bytes(frame)
                    next_frame = client.outbox.get_nowait()
                    if next_frame is None:
                        break
                    frame = next_frame
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - a vanished client: its handler cleans up
            log.debug("websocket %s send failed", sid, exc_info=True)

    def _drop(self, sid: str, client: _Client) -> None:
        if self.clients.get(sid) is client:
            del self.clients[sid]
        if client.sender is not None:
            client.sender.cancel()
        client.outbox.clear()
        asyncio.ensure_future(client.ws.close())

    async def close(self) -> None:
        for sid, client in list(self.clients.items()):
            if client.sender is not None:
                client.sender.cancel()
            await client.ws.close(code=1001, message=b"server shutting down")
        self.clients.clear()
