"""ComfyUI's `server` module for plugins: `PromptServer.instance`, `BinaryEventTypes`, and aiohttp's `web`.

`PromptServer.instance` exists from import on, whether or not a server runs. Its `routes` (an aiohttp
RouteTableDef) are handed to sdgraph's server through `sdgraph.face_hooks`, which mounts them when its app is
built, under their path and under /api. Messages (`send_sync`, `send`, `send_json`, `send_progress_text`) go to
the attached server's WebSocket clients, to `sid` or to everyone; with no server (the CLI) they go nowhere.
`client_id` and `last_node_id` follow the node call in progress: the client that queued the running prompt,
and the node being run. `app` is the server's aiohttp application once one runs; before that a stand-in that
collects `add_routes` for the app to come. `prompt_queue` shows the running and pending prompts and can queue
one (VideoHelperSuite requeues its own workflow this way).
"""
from __future__ import annotations

import io
import logging
import struct
import uuid  # noqa: F401 - packs reach it as server.uuid
from typing import Any, Iterable

from aiohttp import web

from sdgraph import face_hooks
from sdgraph.comfy_layer import binding

log = logging.getLogger("sdgraph.plugins")

__all__ = ["BinaryEventTypes", "PromptServer", "web"]


class BinaryEventTypes:
    """The first big-endian u32 of a binary WebSocket frame (ComfyUI's protocol numbers)."""

    PREVIEW_IMAGE = 1
    UNENCODED_PREVIEW_IMAGE = 2
    TEXT = 3
    PREVIEW_IMAGE_WITH_METADATA = 4


IMAGE_FORMATS = {"JPEG": 1, "PNG": 2}


class _PendingRouter:
    """The router of the app to come: never frozen; what is added joins the routes mounted when it is built."""

    frozen = False

    def __init__(self, routes: web.RouteTableDef) -> None:
        self._routes = routes

    def add_route(self, method: str, path: str, handler: Any, **kwargs: Any) -> None:
        self._routes.route(method, path, **kwargs)(handler)

    def add_get(self, path: str, handler: Any, **kwargs: Any) -> None:
        self.add_route("GET", path, handler, **kwargs)

    def add_post(self, path: str, handler: Any, **kwargs: Any) -> None:
        self.add_route("POST", path, handler, **kwargs)

    def add_static(self, prefix: str, path: Any, **kwargs: Any) -> None:
        self._routes.static(prefix, str(path), **kwargs)


class _PendingApp:
    """Stands in for `PromptServer.instance.app` until a server's application exists."""

    def __init__(self, routes: web.RouteTableDef) -> None:
        self.router = _PendingRouter(routes)
        self._routes = routes

    def add_routes(self, definitions: Iterable[web.AbstractRouteDef]) -> None:
        for definition in definitions:
            if isinstance(definition, web.StaticDef):
                self._routes.static(definition.prefix, definition.path, **definition.kwargs)
            elif isinstance(definition, web.RouteDef):
                self._routes.route(definition.method, definition.path, **definition.kwargs)(definition.handler)
            else:
                raise TypeError(f"not an aiohttp route definition: {definition!r}")

    def __getitem__(self, key: Any) -> Any:
        raise KeyError(key)


class _QueueView:
    """`prompt_queue`: the server's queue in ComfyUI's tuple shape (empty, and refusing nothing, without one)."""

    @property
    def currently_running(self) -> dict[int, tuple[Any, ...]]:
        face = face_hooks.current_face()
        items = face.running() if face is not None else []
        return {index: (*item, {}) for index, item in enumerate(items)}

    @property
    def queue(self) -> list[tuple[Any, ...]]:
        face = face_hooks.current_face()
        return [(*item, {}) for item in face.pending()] if face is not None else []

    def get_current_queue(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        return list(self.currently_running.values()), self.queue

    def get_current_queue_volatile(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        return self.get_current_queue()

    def get_tasks_remaining(self) -> int:
        return len(self.queue) + len(self.currently_running)

    def put(self, item: tuple[Any, ...]) -> None:
        """Queue (number, prompt_id, prompt, extra_data, outputs_to_execute[, sensitive])."""
        number, prompt_id, prompt, extra_data, outputs = item[:5]
        face = face_hooks.current_face()
        if face is None:
            log.warning("a plugin queued prompt %s but no server runs; dropped", prompt_id)
            return
        face.put(str(prompt_id), prompt, dict(extra_data or {}), list(outputs), number)


class PromptServer:
    instance: PromptServer

    def __init__(self) -> None:
        self.routes = web.RouteTableDef()
        face_hooks.add_route_table(self.routes)
        self.supports = ["custom_nodes_from_web"]  # WEB_DIRECTORY is served: packs must not copy their JS
        self.number = 0
        self.sockets: dict[str, Any] = {}
        self.sockets_metadata: dict[str, Any] = {}
        self.prompt_queue = _QueueView()
        self._pending_app = _PendingApp(self.routes)

    # ---- what a pack reads ---------------------------------------------------------------------------

    @property
    def app(self) -> Any:
        face = face_hooks.current_face()
        return face.app if face is not None else self._pending_app

    @property
    def loop(self) -> Any:
        face = face_hooks.current_face()
        return face.loop if face is not None else None

    @property
    def client_id(self) -> str | None:
        ctx = binding.recent_context()
        value = ctx.extra_data.get("client_id") if ctx is not None else None
        return value if isinstance(value, str) else None

    @client_id.setter
    def client_id(self, value: Any) -> None:
        pass  # sdgraph's executor knows each prompt's client; what a pack sets is not ComfyUI's to keep

    @property
    def last_node_id(self) -> str | None:
        ctx = binding.context()
        return ctx.node_id if ctx is not None else None

    @last_node_id.setter
    def last_node_id(self, value: Any) -> None:
        pass

    # ---- messages ------------------------------------------------------------------------------------

    def send_sync(self, event: Any, data: Any, sid: str | None = None) -> None:
        """Send to client `sid` (every client when None), from any thread."""
        for face in face_hooks.faces():
            _deliver(face, event, data, sid)

    async def send(self, event: Any, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_json(self, event: str, data: Any, sid: str | None = None) -> None:
        self.send_sync(event, data, sid)

    async def send_bytes(self, event: int, data: bytes, sid: str | None = None) -> None:
        self.send_sync(event, bytes(data), sid)

    def send_progress_text(self, text: str | bytes, node_id: str, sid: str | None = None) -> None:
        payload = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        node = str(node_id).encode("utf-8")
        self.send_sync(BinaryEventTypes.TEXT, struct.pack(">I", len(node)) + node + payload,
                       sid if sid is not None else self.client_id)

    def queue_updated(self) -> None:
        """sdgraph's server announces queue changes itself; kept for packs that call it."""

    # ---- prompt handlers -----------------------------------------------------------------------------

    def add_on_prompt_handler(self, handler: Any) -> None:
        face_hooks.add_prompt_handler(handler)

    def trigger_on_prompt(self, json_data: Any) -> Any:
        return face_hooks.filter_prompt(json_data)


def _deliver(face: face_hooks.Face, event: Any, data: Any, sid: str | None) -> None:
    if event == BinaryEventTypes.UNENCODED_PREVIEW_IMAGE:
        face.send_bytes(BinaryEventTypes.PREVIEW_IMAGE, _encode_preview(data), sid)
    elif event == BinaryEventTypes.PREVIEW_IMAGE_WITH_METADATA:
        face.send_bytes(BinaryEventTypes.PREVIEW_IMAGE, _encode_preview(data[0]), sid)  # metadata: not yet
    elif isinstance(data, (bytes, bytearray)):
        if not isinstance(event, int):
            raise TypeError(f"a binary message needs an integer event type, got {event!r}")
        face.send_bytes(event, bytes(data), sid)
    else:
        face.send(str(event), data, sid)


def _encode_preview(image_data: Any) -> bytes:
    """(format, PIL image, max_size) -> the u32 format number and the encoded image."""
    fmt, image, max_size = (tuple(image_data) + (None,))[:3]
    fmt = str(fmt).upper()
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"preview format must be JPEG or PNG, got {fmt!r}")
    if max_size is not None:
        image = image.copy()
        image.thumbnail((int(max_size), int(max_size)))
    if fmt == "JPEG" and image.mode != "RGB":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=95, compress_level=1)
    return struct.pack(">I", IMAGE_FORMATS[fmt]) + buffer.getvalue()


PromptServer.instance = PromptServer()
