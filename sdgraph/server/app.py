"""Assemble the aiohttp application: state, middlewares, routes (each also under /api), the worker's life cycle."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from aiohttp import web

from sdgraph.execute import Executor
from sdgraph.server import extensions, files, openapi, routes, static, system
from sdgraph.server.config import ServerConfig, default_web_dir
from sdgraph.server.backend import BackendFactory
from sdgraph.server.errors import error_middleware
from sdgraph.server.plugin_face import attach_face, mount_plugin_routes
from sdgraph.server.queue import PromptStore
from sdgraph.server.security import add_security_headers, security_middleware
from sdgraph.server.state import STATE, ServerState
from sdgraph.server.worker import Worker
from sdgraph.server.ws import Hub

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(executor: Executor, config: ServerConfig | None = None, *, start_worker: bool = True,
               backend: BackendFactory | None = None) -> web.Application:
    """The server over one executor. The worker starts with the app (or, with `start_worker=False`, when the
    caller calls `start_worker(app)`: a server starts it once its socket listens) and stops with it.
    `backend` builds another worker backend (sdgraph.server.backend) than the in-process worker; the executor
    then still validates submissions and describes nodes."""
    config = config or ServerConfig()
    dirs = executor.services.dirs
    store = PromptStore(config.db_path or dirs.user / "server.sqlite3", max_history=config.max_history,
                        max_pending=config.max_queue, max_pending_bytes=config.max_queue_bytes)
    hub = Hub(lambda: {"status": {"exec_info": {"queue_remaining": store.remaining()}}})
    store.on_queued = hub.post_status
    worker = backend(executor, store, hub) if backend is not None else Worker("0", executor, store, hub)
    state = ServerState(config, executor, store, hub, worker, config.web_dir or default_web_dir())

    app = web.Application(middlewares=[error_middleware, security_middleware(config)],
                          client_max_size=max(config.max_upload_bytes, config.max_body_bytes) + (1 << 20))
    app[STATE] = state
    app.on_response_prepare.append(add_security_headers)
    app.on_startup.append(_start_hub)
    if start_worker:
        app.on_startup.append(_start_worker)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)

    table: list[tuple[str, str, Handler]] = [
        ("GET", "/ws", hub.handle),
        *routes.ROUTES, *system.ROUTES, *files.ROUTES, *openapi.ROUTES, *extensions.ROUTES,
    ]
    for method, path, handler in table:
        for prefix in ("", "/api"):
            _add(app, method, prefix + path, handler)
    mount_plugin_routes(app)  # after the API (a plugin cannot shadow it), before the editor's catch-all
    attach_face(app, hub, store)
    for method, path, handler in static.ROUTES:  # the editor last: its catch-all must not shadow the API
        _add(app, method, path, handler)
    return app


def _add(app: web.Application, method: str, path: str, handler: Handler) -> None:
    if method == "GET" and not path.endswith("/ws"):
        app.router.add_get(path, handler)  # HEAD too
    else:
        app.router.add_route(method, path, handler)


async def _start_hub(app: web.Application) -> None:
    state = app[STATE]
    for directory in (state.dirs.input, state.dirs.output, state.dirs.temp, state.dirs.user):
        directory.mkdir(parents=True, exist_ok=True)
    state.hub.start(asyncio.get_running_loop())


async def _start_worker(app: web.Application) -> None:
    start_worker(app)


def start_worker(app: web.Application) -> None:
    """Let the worker take prompts (idempotent)."""
    worker = app[STATE].worker
    if not worker.alive:
        worker.start()


async def _shutdown(app: web.Application) -> None:
    await app[STATE].hub.close()


async def _cleanup(app: web.Application) -> None:
    state = app[STATE]
    await asyncio.to_thread(state.worker.stop)
    state.store.close_db()
