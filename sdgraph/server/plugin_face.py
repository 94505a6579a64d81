"""The server as plugins see it (`sdgraph.face_hooks`): their HTTP routes mounted, their messages delivered.

Routes that plugins declared (ComfyUI packs through `PromptServer.instance.routes`) are added when the app is
built, each under its path and under /api, after sdgraph's own API and before the editor's files, so a plugin
can neither shadow an API route nor be shadowed by the editor. A route that cannot be added (the same method
and path as one already there, a bad pattern) is logged and skipped. While the app runs it is the attached
face: messages plugins send reach its WebSocket clients through the hub, and they see its queue.
"""
from __future__ import annotations

import asyncio
import json
import logging
import struct
from typing import Any

from aiohttp import web

from sdgraph import face_hooks
from sdgraph.server.queue import PromptStore
from sdgraph.server.ws import Hub, TextFrame, text_frame

log = logging.getLogger("sdgraph.server")
FACE = web.AppKey("sdgraph_plugin_face", object)


class PluginFace:
    def __init__(self, app: web.Application, hub: Hub, store: PromptStore) -> None:
        self.app = app
        self.hub = hub
        self.store = store

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self.hub.loop

    def send(self, event: str, data: Any, sid: str | None) -> None:
        if isinstance(data, dict):
            frame = text_frame(event, data)
        else:  # a pack may send a list or a string; only dicts can stand for a supersedable frame
            frame = TextFrame(json.dumps({"type": event, "data": data}, default=str))
        self.hub.post(frame, sid)

    def send_bytes(self, event: int, payload: bytes, sid: str | None) -> None:
        self.hub.post(struct.pack(">I", event) + payload, sid)

    def running(self) -> list[tuple[Any, ...]]:
        return [_entry(item) for item in self.store.snapshot()[0]]

    def pending(self) -> list[tuple[Any, ...]]:
        return [_entry(item) for item in self.store.snapshot()[1]]

    def put(self, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any], outputs: list[str],
            number: float | None) -> None:
        client_id = extra_data.get("client_id")
        self.store.put(prompt_id, prompt, extra_data, [str(o) for o in outputs],
                       client_id=client_id if isinstance(client_id, str) else None,
                       number=float(number) if number is not None else None)
        self.hub.post_status()


def _entry(item: Any) -> tuple[Any, ...]:
    return (item.number, item.prompt_id, item.prompt, item.extra_data, list(item.outputs_to_execute))


def _latest_first(definitions: list[Any]) -> list[Any]:
    """One definition per method and path (or static prefix): the latest, as a reloaded pack's replaces its old."""
    seen: dict[tuple[str, str], Any] = {}
    for definition in definitions:
        key = (("STATIC", definition.prefix) if isinstance(definition, web.StaticDef)
               else (getattr(definition, "method", ""), getattr(definition, "path", repr(definition))))
        seen.pop(key, None)
        seen[key] = definition
    return list(seen.values())


def mount_plugin_routes(app: web.Application) -> int:
    """Add every route plugins declared so far; returns how many were added."""
    added = 0
    taken = {(route.method, route.resource.canonical) for route in app.router.routes() if route.resource}
    for definition in _latest_first(face_hooks.route_definitions()):
        variants = [definition]
        if isinstance(definition, web.RouteDef):
            variants.append(web.RouteDef(definition.method, "/api" + definition.path, definition.handler,
                                         definition.kwargs))
        for variant in variants:
            if isinstance(variant, web.RouteDef) and (variant.method, variant.path) in taken:
                log.warning("a plugin's route %s %s was not added: sdgraph serves that path itself",
                            variant.method, variant.path)
                continue
            try:
                variant.register(app.router)
                added += 1
            except (RuntimeError, ValueError, TypeError) as exc:
                log.warning("a plugin's route %r was not added: %s", variant, exc)
    return added


def attach_face(app: web.Application, hub: Hub, store: PromptStore) -> None:
    """Make this app the face plugins reach from its start-up to its clean-up."""
    face = PluginFace(app, hub, store)
    app[FACE] = face

    async def on_startup(_: web.Application) -> None:
        face_hooks.attach(face)

    async def on_cleanup(_: web.Application) -> None:
        face_hooks.detach(face)

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
