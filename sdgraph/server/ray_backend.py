"""The Ray transport: each worker is a Ray actor holding an executor (its model manager and output cache).

A run is an actor generator: the actor runs the prompt in a thread of its own and yields its messages
(`sdgraph.server.remote`) as they come, so they reach the server in order while the prompt runs. The actor is
threaded (`max_concurrency`), so `interrupt` and `free` calls reach it during a run. An actor that dies (killed,
`os._exit` or a segfault in a node, its node lost) ends the generator with an actor error: the run raises
WorkerLost, the pool requeues or fails the prompt, and a new actor takes the old one's place.

Ray is an optional extra (`pip install sdgraph[ray]`): nothing here imports it before a Ray backend is built.
`connect("local")` starts a local Ray (`ray.init(num_cpus=2, include_dashboard=False)` by default);
any other address joins that cluster, whose nodes need sdgraph (and the node packs) installed.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any, Callable, Iterator

from sdgraph.server.backend import WorkerLost
from sdgraph.server.queue import PromptStore
from sdgraph.server.remote import Message, RemoteRunner
from sdgraph.server.spool import remove_left
from sdgraph.server.ws import Hub

log = logging.getLogger("sdgraph.server")

START_TIMEOUT_S = 300.0
ACTOR_CONCURRENCY = 4  # the run's generator, plus interrupt / free / hello calls beside it


def connect(address: str = "local", num_cpus: int = 2) -> None:
    """Start a local Ray, or join the cluster at `address`; nothing if Ray is already initialised here."""
    import ray  # noqa: PLC0415

    if ray.is_initialized():
        return
    path = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {"env_vars": {"PYTHONPATH": path}}  # actors import what this process imports
    if address == "local":
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    else:
        _token_auth_like_ray_start()
        ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)


def _token_auth_like_ray_start() -> None:
    """`ray start` (2.60) turns token authentication on when RAY_AUTH_MODE is unset and a token is at hand
    (~/.ray/auth_token, RAY_AUTH_TOKEN), but a driver joining it does not, and then retries unauthenticated for
    a minute: join as `ray start` started, with Ray's own rule (a Ray without it keeps its defaults)."""
    try:
        from ray._private.authentication.authentication_token_setup import (  # noqa: PLC0415
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


class ExecutorActor:
    """The actor's class (made remote by `_actor_class`)."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.runner = RemoteRunner(factory())

    def hello(self) -> dict[str, Any]:
        import ray  # noqa: PLC0415

        return {**self.runner.hello(), "node": ray.get_runtime_context().get_node_id()}

    def run(self, request: dict[str, Any]) -> Iterator[Message]:
        messages: queue.Queue[Message] = queue.Queue()
        threading.Thread(target=self._run, args=(request, messages.put), daemon=True).start()
        while True:
            message = messages.get()
            yield message
            if message[0] == "done":
                return

    def _run(self, request: dict[str, Any], send: Callable[[Message], None]) -> None:
        try:
            self.runner.run(request, send)
        except BaseException as exc:  # noqa: BLE001 - the generator must always end
            send(("done", {"status": "error", "error": {"exception_message": repr(exc)}}))

    def interrupt(self, prompt_id: str | None) -> bool:
        return self.runner.interrupt(prompt_id)

    def free(self, unload_models: bool, free_memory: bool) -> None:
        self.runner.request_free(unload_models, free_memory)

    def close(self) -> None:
        self.runner.close()


_ACTOR: Any = None


def _actor_class() -> Any:
    global _ACTOR
    if _ACTOR is None:
        import ray  # noqa: PLC0415

        _ACTOR = ray.remote(max_concurrency=ACTOR_CONCURRENCY)(ExecutorActor)
    return _ACTOR


def actor_options(gpus: float | None = None) -> dict[str, Any]:
    """What each actor asks Ray for: `gpus` GPUs (a fraction shares one: 0.5 puts two actors on a GPU) and a CPU;
    by default one GPU where the cluster has GPUs, else none. Ray sets the actor's CUDA_VISIBLE_DEVICES to the
    GPUs it was given, so its model manager's `cuda` device is one of them."""
    if gpus is None:
        import ray  # noqa: PLC0415

        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    if gpus < 0:
        raise ValueError("--ray-gpus must not be negative")
    return {"num_gpus": gpus, "num_cpus": 1} if gpus > 0 else {"num_cpus": 1}


class RayChannel:
    kind = "ray"

    def __init__(self, name: str, factory: Callable[[], Any], options: dict[str, Any] | None = None) -> None:
        self.name = name
        self.factory = factory
        self.options = options
        self.hello: dict[str, Any] = {}
        self.actor: Any = None
        self._dead = True

    @property
    def alive(self) -> bool:
        return self.actor is not None and not self._dead

    def start(self) -> dict[str, Any]:
        import ray  # noqa: PLC0415

        options = self.options if self.options is not None else actor_options()
        self.actor = _actor_class().options(name=None, **options).remote(self.factory)
        try:
            self.hello = ray.get(self.actor.hello.remote(), timeout=START_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a timeout, the actor's death while starting
            self.kill()
            raise WorkerLost(f"actor {self.name} did not start: {type(exc).__name__}: {exc}") from exc
        self._dead = False
        return self.hello

    def run(self, request: dict[str, Any]) -> Iterator[Message]:
        import ray  # noqa: PLC0415

        try:
            for ref in self.actor.run.remote(request):
                message = ray.get(ref)
                yield message
                if message[0] == "done":
                    return
        except ray.exceptions.RayError as exc:
            self._dead = True
            raise WorkerLost(f"the actor died ({type(exc).__name__}: {_first_line(exc)})") from None

    def interrupt(self, prompt_id: str | None) -> None:
        if self.alive:
            self.actor.interrupt.remote(prompt_id)

    def request_free(self, unload_models: bool, free_memory: bool) -> None:
        if self.alive:
            self.actor.free.remote(unload_models, free_memory)

    def stop(self, timeout: float = 10.0) -> None:
        import ray  # noqa: PLC0415

        if self.alive:  # its spool is on its own node: only the actor can remove it
            try:
                ray.get(self.actor.close.remote(), timeout=min(timeout, 5.0))
            except Exception:  # noqa: BLE001 - dying or gone
                pass
        self.kill()

    def kill(self) -> None:
        import ray  # noqa: PLC0415

        self._dead = True
        if self.actor is not None:
            try:
                ray.kill(self.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self.hello.get("node") == ray.get_runtime_context().get_node_id():
            remove_left(self.hello)  # a dead actor's spool, on this machine (elsewhere it stays, emptied)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def ray_pool(count: int, factory: Callable[[], Any], address: str = "local", policy: str = "affinity",
             options: dict[str, Any] | None = None) -> Callable[[Any, PromptStore, Hub], Any]:
    """A BackendFactory for `create_app`: `count` actors, each with an executor from `factory`."""
    from sdgraph.server.outputs import OutputStore  # noqa: PLC0415
    from sdgraph.server.pool import WorkerPool  # noqa: PLC0415
    from sdgraph.server.routing import Router, prompt_models  # noqa: PLC0415

    def build(executor: Any, store: PromptStore, hub: Hub) -> WorkerPool:
        connect(address)
        channels = [RayChannel(f"ray{i}", factory, options) for i in range(count)]
        router = Router(lambda prompt: prompt_models(prompt, executor.registry), policy=policy)
        return WorkerPool(channels, store, hub, router, OutputStore(executor.services.dirs))

    return build
