"""What every handler shares: settings, the executor, the prompt store, the WebSocket hub and the worker."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from sdgraph.execute import Executor
from sdgraph.paths import Dirs
from sdgraph.registry import Registry
from sdgraph.server.config import ServerConfig
from sdgraph.server.queue import PromptStore
from sdgraph.server.backend import WorkerBackend
from sdgraph.server.ws import Hub


@dataclass
class ServerState:
    config: ServerConfig
    executor: Executor
    store: PromptStore
    hub: Hub
    worker: WorkerBackend  # the in-process Worker unless another backend was chosen
    web_dir: Path

    @property
    def registry(self) -> Registry:
        return self.executor.registry

    @property
    def dirs(self) -> Dirs:
        return self.executor.services.dirs

    def status(self) -> dict[str, Any]:
        return {"status": {"exec_info": {"queue_remaining": self.store.remaining()}}}


STATE = web.AppKey("sdgraph_state", ServerState)


def state_of(request: web.Request) -> ServerState:
    return request.app[STATE]
