"""`sdgraph serve`: the command-line face of the server. The CLI calls `add_serve_parser` and `serve`."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgraph.cobatch import add_batching_arguments, batching_options
from sdgraph.disk_cache import add_disk_cache_arguments, disk_cache_options
from sdgraph.fast_path import add_fast_path_arguments, fast_path_options
from sdgraph.limits import RAM_BUDGET_HELP, add_limit_arguments, gigabytes, limits_from_args

if TYPE_CHECKING:
    from aiohttp import web

    from sdgraph.server import ServerConfig

DEFAULT_PORT = 8188
# The worker thread and the HTTP loop share the GIL. A node that computes in Python holds it for up to the switch
# interval at a time (5 ms by default); 2 ms keeps HTTP latency low while a prompt runs, at no cost to a trivial
# prompt's overhead (measured by bench/server_load.py).
SWITCH_INTERVAL_S = 0.002


def add_serve_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    net = parser.add_argument_group("network")
    net.add_argument("--listen", default="127.0.0.1",
                     help="address(es) to bind, comma-separated (default 127.0.0.1; anything off loopback "
                          "requires an access token)")
    net.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    net.add_argument("--token", default=os.environ.get("SDGRAPH_TOKEN"),
                     help="access token clients must present (default: $SDGRAPH_TOKEN; generated and printed "
                          "when listening off loopback)")
    net.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                     help="also accept this Host name (e.g. a reverse proxy's); repeatable")
    net.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload (default 100 MB)")
    net.add_argument("--max-body-mb", type=float, default=16.0, help="largest JSON request body (default 16 MB)")
    net.add_argument("--head-timeout", type=float, default=30.0, metavar="S",
                     help="close a connection that has not sent a whole request head (or is idle) this long "
                          "(default 30 s)")
    net.add_argument("--body-timeout", type=float, default=30.0, metavar="S",
                     help="cut off a request body that sends nothing this long (default 30 s)")
    net.add_argument("--max-connections", type=int, default=1000, metavar="N",
                     help="open connections kept; beyond it the oldest idle ones are closed (default 1000)")
    run = parser.add_argument_group("engine")
    run.add_argument("--base-dir", type=Path, default=None,
                     help="directory holding models/, input/, output/, temp/, custom_nodes/, user/ "
                          "(default: $SDGRAPH_HOME or ./user)")
    run.add_argument("--cpu", action="store_true", help="run everything on the CPU")
    run.add_argument("--lowvram", action="store_true", help="stream weights to the GPU as they are needed")
    add_fast_path_arguments(run)
    run.add_argument("--reserve-vram", type=float, default=1.0, metavar="GB", help="GPU memory left free")
    run.add_argument("--ram-budget-gb", type=gigabytes, default=None, metavar="GB", help=RAM_BUDGET_HELP)
    run.add_argument("--no-cache", action="store_true", help="do not keep node outputs between prompts")
    run.add_argument("--cache-lru", type=int, default=0, metavar="N",
                     help="besides each node's latest output, keep N outputs of earlier prompts (default 0)")
    run.add_argument("--no-plugins", action="store_true", help="load only the built-in node packs")
    run.add_argument("--preview", action="store_true", help="send latent previews while sampling")
    run.add_argument("--warm-up", action="append", default=[], type=Path, metavar="WORKFLOW",
                     help="queue this workflow file before any client's prompt, so that its models are loaded (and, "
                          "with --compile, its image size compiled) before anyone waits; repeatable. Its outputs "
                          "are saved as any prompt's: end it in PreviewImage to keep output/ clean")
    run.add_argument("--max-history", type=int, default=10000, help="finished prompts kept (default 10000)")
    run.add_argument("--max-queue", type=int, default=10000,
                     help="pending prompts accepted; past it a submission gets 429 (default 10000)")
    run.add_argument("--max-queue-mb", type=float, default=1024.0,
                     help="pending prompts' JSON, all together; past it a submission gets 429 (default 1024 MB)")
    workers = parser.add_argument_group("workers")
    workers.add_argument("--worker-processes", type=int, default=0, metavar="N",
                         help="run prompts in N child processes (a crash kills only the child, which is restarted) "
                              "instead of in the server's own process (default 0: in-process)")
    workers.add_argument("--ray", default=None, metavar="ADDRESS",
                         help="run prompts on Ray actors: 'local' starts a local Ray, an address joins a cluster "
                              "(needs sdgraph[ray])")
    workers.add_argument("--ray-workers", type=int, default=2, metavar="N", help="Ray actors (default 2)")
    workers.add_argument("--ray-gpus", type=float, default=None, metavar="N",
                         help="GPUs each Ray actor asks for; a fraction shares a GPU (default: 1 where the cluster "
                              "has GPUs, else 0)")
    workers.add_argument("--routing", choices=("affinity", "fifo", "random"), default="affinity",
                         help="which queued prompt a free worker takes (default affinity: one whose models it holds)")
    add_disk_cache_arguments(parser)
    add_batching_arguments(parser)
    add_limit_arguments(parser)
    return parser


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    # No abbreviations: `--tok X` must be refused, not silently read as the secret `--token X`.
    parser = subparsers.add_parser("serve", help="run the HTTP and WebSocket server (ComfyUI-compatible API)",
                                   description="Serve the API, the queue and the browser editor.", allow_abbrev=False)
    add_serve_arguments(parser)
    parser.set_defaults(handler=serve)  # the CLI calls args.handler(args)
    return parser


def serve(args: argparse.Namespace, executor: Any = None, executor_factory: Any = None) -> int:
    """Run until interrupted. `executor` replaces the one built from the flags (tests, embedding);
    `executor_factory` (picklable) builds the executors of child processes or Ray actors in its place."""
    from sdgraph.runtime import RuntimeOptions, create_executor  # noqa: PLC0415
    from sdgraph.server import ServerConfig, create_app  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    config = ServerConfig(
        listen=args.listen, port=args.port, token=args.token or None,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_body_bytes=int(args.max_body_mb * 1024 * 1024),
        max_history=args.max_history, allowed_hosts=tuple(args.allow_host), max_queue=args.max_queue,
        max_queue_bytes=int(args.max_queue_mb * 1024 * 1024),
        head_timeout_s=args.head_timeout, body_timeout_s=args.body_timeout, max_connections=args.max_connections,
    )
    config, generated = config.with_token_if_public()
    options = RuntimeOptions(base_dir=args.base_dir, plugins=not args.no_plugins, no_cache=args.no_cache,
                             cache_lru=args.cache_lru, cpu=args.cpu, lowvram=args.lowvram,
                             reserve_vram_gb=args.reserve_vram, ram_budget_gb=args.ram_budget_gb,
                             preview=args.preview,
                             limits=limits_from_args(args), **disk_cache_options(args), **batching_options(args),
                             **fast_path_options(args))
    if executor is None:
        executor = create_executor(options)
    for problem in executor.registry.problems:
        print(f"warning: node pack {problem.pack}: {problem.message}", file=sys.stderr)
    print(f"sdgraph: {len(executor.registry.nodes)} node classes; data in {executor.services.dirs.base}",
          flush=True)
    if executor_factory is None:
        executor_factory = functools.partial(create_executor, options)
    try:
        backend = worker_backend(args, executor_factory)
    except (ImportError, ValueError) as exc:
        print(f"sdgraph: {exc}", file=sys.stderr)
        return 2
    app = create_app(executor, config, start_worker=False, backend=backend)
    if args.warm_up and not queue_warm_ups(app, args.warm_up):
        return 2
    host = config.listen_hosts[0]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    url = f"http://{shown}:{config.port}/"
    if config.token:
        if generated:
            print("sdgraph: listening off loopback, so clients need an access token (made one; "
                  "pass --token to choose it)", flush=True)
        print(f"sdgraph: open {url}?token={config.token}", flush=True)
    else:
        print(f"sdgraph: open {url}", flush=True)
    try:
        asyncio.run(_serve_until_stopped(app, config))
    except CannotListen as exc:
        print(f"sdgraph: cannot listen on {config.listen}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def queue_warm_ups(app: web.Application, paths: list[Path]) -> bool:
    """Queue the --warm-up workflows, in order, ahead of every client's prompt; all of them or, when one cannot be
    read or does not validate (said on stderr, naming the file and the node), none."""
    from sdgraph.cli import prepare_named, print_invalid  # noqa: PLC0415
    from sdgraph.server.queue import QueueFull  # noqa: PLC0415
    from sdgraph.server.state import STATE  # noqa: PLC0415
    from sdgraph.workflow import WorkflowFormatError, load_workflow  # noqa: PLC0415

    state = app[STATE]
    queued: list[tuple[str, dict[str, Any], list[str]]] = []
    for path in paths:
        try:
            workflow = load_workflow(path, state.executor.registry)
        except (OSError, WorkflowFormatError) as exc:  # a UI file's ConversionError names its nodes
            print(f"sdgraph: --warm-up {path}: {exc}", file=sys.stderr)
            return False
        prompt = prepare_named(state.executor, workflow)
        try:
            if not prompt.ok:
                print(f"sdgraph: --warm-up {path} cannot run:", file=sys.stderr)
                print_invalid(prompt)
                return False
            queued.append((f"warm-up-{len(queued) + 1}-{uuid.uuid4()}", workflow.to_api(), list(prompt.outputs)))
        finally:
            prompt.release()
    # each `front` prompt goes ahead of those queued before it: the last given runs last only if given first
    try:
        items = state.store.put_many(queued[::-1], {"warm_up": True}, front=True)
    except (QueueFull, OSError) as exc:  # a persisted queue at its bounds, a full disk
        print(f"sdgraph: --warm-up: cannot queue: {exc}", file=sys.stderr)
        return False
    print(f"sdgraph: warm-up: {len(items)} workflow(s) queued first ({', '.join(str(p) for p in paths)})",
          flush=True)
    return True


def worker_backend(args: argparse.Namespace, factory: Any) -> Any:
    """The BackendFactory the flags ask for; None for the in-process worker."""
    routing = getattr(args, "routing", "affinity")
    if getattr(args, "ray", None):
        if args.ray_workers < 1:
            raise ValueError("--ray-workers must be at least 1")
        try:
            import ray  # noqa: F401, PLC0415
        except ImportError:
            raise ImportError("--ray needs Ray: pip install 'sdgraph[ray]'") from None
        from sdgraph.server.ray_backend import actor_options, ray_pool  # noqa: PLC0415

        gpus = getattr(args, "ray_gpus", None)
        options = None if gpus is None else actor_options(gpus)
        return ray_pool(args.ray_workers, factory, address=args.ray, policy=routing, options=options)
    if getattr(args, "worker_processes", 0) > 0:
        from sdgraph.server.pool import subprocess_pool  # noqa: PLC0415

        return subprocess_pool(args.worker_processes, factory, policy=routing)
    return None


class CannotListen(Exception):
    """An address could not be bound (in use, not ours, ...)."""


async def start_serving(app: web.Application, config: ServerConfig) -> tuple[web.AppRunner, asyncio.Task[None]]:
    """Listen on every address, and only then let the worker take prompts. Returns the runner and the
    connection guard's sweep task; the caller cancels the task and cleans the runner up."""
    from aiohttp import web  # noqa: PLC0415 - keep `sdgraph --help` fast

    from sdgraph.server.app import start_worker  # noqa: PLC0415
    from sdgraph.server.connections import ConnectionGuard, connection_cap, raise_open_file_limit  # noqa: PLC0415

    guard = ConnectionGuard(connection_cap(config.max_connections, raise_open_file_limit()), config.body_timeout_s)
    app.middlewares.append(guard.middleware)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0, keepalive_timeout=config.head_timeout_s)
    await runner.setup()
    try:
        for host in config.listen_hosts:
            await web.TCPSite(runner, host, config.port, backlog=config.backlog).start()
    except BaseException as exc:
        # Worker.stop (run by the app's cleanup) cannot join a thread that never started; nothing else is left.
        with contextlib.suppress(RuntimeError):
            await runner.cleanup()
        if isinstance(exc, OSError):
            raise CannotListen(exc.strerror or str(exc)) from exc
        raise
    assert runner.server is not None
    sweep = asyncio.ensure_future(guard.run(runner.server))
    start_worker(app)
    return runner, sweep


async def _serve_until_stopped(app: web.Application, config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner, sweep = await start_serving(app, config)
    try:
        await stop.wait()
    finally:
        sweep.cancel()
        await runner.cleanup()  # stops the worker, which requeues a prompt it was running


def main(argv: list[str] | None = None) -> int:
    parser = add_serve_arguments(argparse.ArgumentParser(prog="python -m sdgraph.server", allow_abbrev=False))
    return serve(parser.parse_args(argv))
