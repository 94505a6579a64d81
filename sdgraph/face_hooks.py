"""What plugins hand to the running face (HTTP routes, prompt filters) and what a face lends them (a way to
reach its clients, its app, its queue).

A plugin adds routes and prompt handlers at import time, usually before any server exists, and sends messages
from inside a node call, with or without a server. This module keeps both sides apart: plugins (through the
ComfyUI compatibility layer) write here, a face reads here and attaches itself while it runs. With no face
attached (the CLI), messages go nowhere and routes are kept for a server that may be built later. The core
never imports a face or the layer; the module holds opaque objects and knows no HTTP library.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable, Protocol

log = logging.getLogger("sdgraph.plugins")


class Face(Protocol):
    """A running server as plugins may use it (sdgraph/server/plugin_face.py implements it)."""

    app: Any  # the aiohttp application
    loop: Any  # its event loop, once started

    def send(self, event: str, data: Any, sid: str | None) -> None: ...  # a JSON message; any thread
    def send_bytes(self, event: int, payload: bytes, sid: str | None) -> None: ...  # a binary one; any thread
    def running(self) -> list[tuple[Any, ...]]: ...  # (number, prompt_id, prompt, extra_data, outputs)
    def pending(self) -> list[tuple[Any, ...]]: ...
    def put(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any], outputs: list[str],
            number: float | None) -> None: ...


_lock = threading.Lock()
_route_tables: list[Iterable[Any]] = []  # aiohttp route-definition iterables, read when an app is built
_prompt_handlers: list[Callable[[Any], Any]] = []
_faces: list[Face] = []


def add_route_table(table: Iterable[Any]) -> None:
    """Routes to add to every server built from now on (the table may still grow until then)."""
    with _lock:
        if not any(t is table for t in _route_tables):
            _route_tables.append(table)


def route_definitions() -> list[Any]:
    with _lock:
        tables = list(_route_tables)
    return [route for table in tables for route in list(table)]


def add_prompt_handler(handler: Callable[[Any], Any]) -> None:
    """handler(body) -> body, called on each submitted prompt's JSON body before it is checked."""
    with _lock:
        _prompt_handlers.append(handler)


def filter_prompt(body: Any) -> Any:
    """The body after every prompt handler; a handler that fails is logged and skipped, as in ComfyUI."""
    with _lock:
        handlers = list(_prompt_handlers)
    for handler in handlers:
        try:
            result = handler(body)
        except Exception:  # noqa: BLE001 - a plugin's handler must not refuse every prompt
            log.warning("a plugin's prompt handler %r failed; skipped", handler, exc_info=True)
            continue
        if result is not None:
            body = result
    return body


def attach(face: Face) -> None:
    with _lock:
        _faces.append(face)


def detach(face: Face) -> None:
    with _lock:
        if face in _faces:
            _faces.remove(face)


def current_face() -> Face | None:
    """The face attached last (normally the only one), or None when no server runs."""
    with _lock:
        return _faces[-1] if _faces else None


def faces() -> list[Face]:
    with _lock:
        return list(_faces)
