"""The worker backends side by side: in-process, subprocess, Ray actors.

    python -m bench.worker_backends                 # all three (Ray only where it is installed)
    python -m bench.worker_backends --no-ray

For each backend, on a real server (aiohttp on loopback) over the pure-Python test nodes
(tests/server/worker_nodes.py: nodes that sleep, so the 2 cores are not the bottleneck):
- throughput: 20 prompts of 0.4 s of sleeping, on 1 and on 2 workers, and the ratio;
- overhead per prompt: a trivial prompt (Number -> Show, a new value each time), submit to `execution_success`
  on the WebSocket, one at a time, median of 30, against the in-process worker's; and the same for a prompt saving
  a 2 MiB file (a large PNG), which a remote worker sends to the server's storage;
- affinity: 40 prompts alternating two models that take 0.3 s to load, on 2 workers: the loads, and the hit rate
  (prompts whose worker already held their models), routed by affinity, at random and in plain queue order.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    if Path.cwd().resolve() != Path(__file__).resolve().parents[1]:
        sys.exit(f"run it from the checkout root: python -m bench.{Path(__file__).stem}")
    os.execv(sys.executable, [sys.executable, "-m", f"bench.{Path(__file__).stem}", *sys.argv[1:]])

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from sdgraph.server import ServerConfig, create_app  # noqa: E402
from tests.server.nodes import chain  # noqa: E402
from tests.server.worker_nodes import add_models, loads, make_executor, model_prompt, save_prompt  # noqa: E402

SAVED_BYTES = 2 * 1024 * 1024


def backend_for(kind: str, count: int, base: Path, policy: str) -> Any:
    factory = functools.partial(make_executor, base)
    if kind == "in-process":
        return None
    if kind == "subprocess":
        from sdgraph.server.pool import subprocess_pool

        return subprocess_pool(count, factory, policy=policy)
    from sdgraph.server.ray_backend import ray_pool

    return ray_pool(count, factory, policy=policy)


async def serve(kind: str, count: int, base: Path, policy: str = "affinity") -> TestClient:
    add_models(base, "a.safetensors", "b.safetensors")
    app = create_app(make_executor(base), ServerConfig(probe_torch=False),
                     backend=backend_for(kind, count, base, policy))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        workers = (await (await client.get("/system_stats")).json())["workers"]
        if len(workers) == count and all(w["alive"] and w["pid"] for w in workers):
            return client
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{kind}: workers never started")


async def run_all(client: TestClient, prompts: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        resp = await client.post("/prompt", json={"prompt": prompt, "prompt_id": f"p{i:03d}"})
        assert resp.status == 200, await resp.text()
    store = _state(client).store
    assert await asyncio.to_thread(store.wait_idle, 600)
    return time.perf_counter() - start


def _state(client: TestClient) -> Any:
    from sdgraph.server.state import STATE

    return client.server.app[STATE]


async def throughput(kind: str, tmp: Path) -> dict[int, float]:
    prompts = [chain(i, middle="Slow", seconds=0.4, steps=4) for i in range(20)]
    seconds = {}
    for count in ((1,) if kind == "in-process" else (1, 2)):
        client = await serve(kind, count, tmp / f"{kind}-tp{count}")
        seconds[count] = await run_all(client, prompts)
        await client.close()
    return seconds


def trivial(i: int) -> dict[str, Any]:
    return chain(i + 1000)


def saving(i: int) -> dict[str, Any]:
    return save_prompt(i + 1000, pad_bytes=SAVED_BYTES)


async def overhead(kind: str, tmp: Path, make: Any = trivial, runs: int = 30) -> float:
    client = await serve(kind, 1, tmp / f"{kind}-overhead-{make.__name__}")
    ws = await client.ws_connect("/ws", params={"clientId": "bench"})
    await ws.receive(timeout=10)
    times = []
    for i in range(runs + 3):
        start = time.perf_counter()
        resp = await client.post("/prompt", json={"prompt": make(i), "client_id": "bench"})
        prompt_id = (await resp.json())["prompt_id"]
        while True:
            msg = await ws.receive(timeout=60)
            frame = json.loads(msg.data) if isinstance(msg.data, str) else {}
            if frame.get("type") == "execution_success" and frame["data"].get("prompt_id") == prompt_id:
                break
        if i >= 3:  # the first runs warm the worker up
            times.append(time.perf_counter() - start)
    await ws.close()
    await client.close()
    return statistics.median(times)


async def affinity(kind: str, tmp: Path, policy: str) -> tuple[int, float]:
    base = tmp / f"{kind}-{policy}"
    client = await serve(kind, 2, base, policy)
    prompts = [model_prompt("a.safetensors" if i % 2 == 0 else "b.safetensors", i, seconds=(0.05, 0.2, 0.1)[i % 3])
               for i in range(40)]  # run times vary (as in the tests), so queue order is not affine by chance
    await run_all(client, prompts)
    router = _state(client).worker.router
    rate = router.hits / max(1, router.hits + router.misses)
    await client.close()
    return len(loads(base)), rate


async def main(kinds: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="sdgraph-bench-workers-") as name:
        tmp = Path(name)
        rows = {}
        for kind in kinds:
            if kind == "ray":
                from sdgraph.server.ray_backend import connect

                connect("local", num_cpus=2)
            rows[kind] = {"throughput": await throughput(kind, tmp), "overhead": await overhead(kind, tmp),
                          "saving": await overhead(kind, tmp, saving)}
            if kind != "in-process":
                rows[kind]["affinity"] = {p: await affinity(kind, tmp, p) for p in ("affinity", "random", "fifo")}
        base, saved = rows["in-process"]["overhead"], rows["in-process"]["saving"]
        print("backend      20x0.4 s: 1 worker  2 workers  ratio | overhead/prompt  vs in-process | "
              "saving 2 MiB  vs in-process | loads, hit rate: affinity | random    | fifo")
        for kind, row in rows.items():
            tp = row["throughput"]
            two = f"{tp[2]:8.2f} s  {tp[1] / tp[2]:4.2f}x" if 2 in tp else "       -      - "
            aff = row.get("affinity")
            affs = " | ".join(f"{aff[p][0]:3d}, {aff[p][1]:4.0%}" for p in ("affinity", "random", "fifo")) if aff else "-"
            print(f"{kind:11s}  {tp[1]:17.2f} s  {two} | {row['overhead'] * 1000:10.1f} ms  "
                  f"{row['overhead'] / base:8.2f}x    | {row['saving'] * 1000:8.1f} ms  {row['saving'] / saved:8.2f}x    "
                  f"| {affs}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-ray", action="store_true", help="leave the Ray backend out")
    args = parser.parse_args()
    kinds = ["in-process", "subprocess"]
    if not args.no_ray:
        try:
            import ray  # noqa: F401

            kinds.append("ray")
        except ImportError:
            print("ray is not installed: leaving the Ray backend out (pip install 'sdgraph[ray]')")
    asyncio.run(main(kinds))
