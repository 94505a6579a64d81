"""Load and soak benchmark of the server, on loopback, against a real server process.

    python -m bench.server_load                      # 500 prompts from 10 clients, latency, overhead per prompt
    python -m bench.server_load --soak 1000          # + resident memory over 1000 prompts of a workflow file
    python -m bench.server_load --soak 1000 --workflow workflows/txt2img.json

Load: a trivial graph (Number -> Show, a new value each time so nothing is cached) on a server process that
loads only the pure-Python test nodes. It checks that no prompt is lost (all 500 reach the history as
successes), measures GET /queue latency while the worker is busy (once with trivial prompts, once while the
worker holds the GIL in a pure-Python loop, the worst case), and the overhead per prompt from submit to
`execution_success` on the WebSocket, one prompt at a time.

Soak: the real `python -m sdgraph.server` with its installed node packs runs the workflow N times (seeds
changed each time so nothing is cached); the server's RSS is sampled as it goes. Without --workflow it uses
workflows/*txt2img*.json when the default model sdgraph-tiny exists, else the trivial graph on the test-node
server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    # Run as a file, sys.path[0] is bench/ and `import sdgraph` could find another checkout's install: rerun as a
    # module of this checkout, whose root `python -m` puts first on sys.path.
    if Path.cwd().resolve() != Path(__file__).resolve().parents[1]:
        sys.exit(f"run it from the checkout root: python -m bench.{Path(__file__).stem}")
    os.execv(sys.executable, [sys.executable, "-m", f"bench.{Path(__file__).stem}", *sys.argv[1:]])

import aiohttp  # noqa: E402

from tests.server.nodes import chain  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SEED_INPUTS = ("seed", "noise_seed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (robust to a busy machine, unlike latencies)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, base: Path, *, real: bool, extra: list[str]) -> None:
        self.port = free_port()
        module = "sdgraph.server" if real else "tests.server.serve_nodes"
        self.log_path = base / "server.log"
        base.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "w")
        command = os.environ.get("SDGRAPH_BENCH_SERVER_MODULE", module).split()
        self.proc = subprocess.Popen([sys.executable, "-m", *command, "--base-dir", str(base), "--port", str(self.port),
                                      *extra], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

    async def ready(self, session: aiohttp.ClientSession, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                async with session.get(f"{self.url}/prompt") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise SystemExit("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class Listener:
    """One WebSocket client: records when each of its prompts succeeded or failed."""

    def __init__(self, session: aiohttp.ClientSession, url: str, client_id: str) -> None:
        self.session, self.url, self.client_id = session, url, client_id
        self.done: dict[str, tuple[str, float]] = {}
        self.waiters: dict[str, asyncio.Future[tuple[str, float]]] = {}

    async def start(self) -> None:
        self.ws = await self.session.ws_connect(f"{self.url}/ws", params={"clientId": self.client_id})
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            kind = frame["type"]
            if kind in ("execution_success", "execution_error", "execution_interrupted"):
                pid = frame["data"]["prompt_id"]
                self.done[pid] = (kind, time.perf_counter())
                waiter = self.waiters.pop(pid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(self.done[pid])

    def wait_for(self, prompt_id: str) -> asyncio.Future[tuple[str, float]]:
        future: asyncio.Future[tuple[str, float]] = asyncio.get_running_loop().create_future()
        if prompt_id in self.done:
            future.set_result(self.done[prompt_id])
        else:
            self.waiters[prompt_id] = future
        return future

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()


async def submit(session: aiohttp.ClientSession, url: str, prompt: dict[str, Any], client_id: str) -> str:
    async with session.post(f"{url}/prompt", json={"prompt": prompt, "client_id": client_id}) as resp:
        data = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"submit failed: {resp.status} {data}")
        return data["prompt_id"]


async def probe(session: aiohttp.ClientSession, url: str, route: str, stop: asyncio.Event,
                samples: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        async with session.get(f"{url}{route}") as resp:
            await resp.read()
        samples.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(0.002)


async def wait_idle(session: aiohttp.ClientSession, url: str) -> None:
    while True:
        async with session.get(f"{url}/prompt") as resp:
            if (await resp.json())["exec_info"]["queue_remaining"] == 0:
                return
        await asyncio.sleep(0.02)


def latency_line(name: str, samples: list[float]) -> str:
    return (f"{name}: n={len(samples)} p50={percentile(samples, 50):.2f} ms p99={percentile(samples, 99):.2f} ms "
            f"max={max(samples, default=float('nan')):.2f} ms")


async def load(args: argparse.Namespace, results: dict[str, Any]) -> None:
    base = Path(tempfile.mkdtemp(prefix="sdgraph-load-"))
    server = Server(base, real=False, extra=[])
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        await server.ready(session)
        url = server.url
        try:
            listeners = [Listener(session, url, f"client{i}") for i in range(args.clients)]
            for listener in listeners:
                await listener.start()

            # 1. prompts from concurrent clients, GET /queue probed while the worker is busy
            per_client = args.prompts // args.clients
            stop, samples_queue, samples_prompt = asyncio.Event(), [], []
            probes = [asyncio.ensure_future(probe(session, url, "/queue", stop, samples_queue)),
                      asyncio.ensure_future(probe(session, url, "/prompt", stop, samples_prompt))]
            start, cpu_start = time.perf_counter(), cpu_seconds(server.proc.pid)

            async def client(i: int) -> list[str]:
                ids = []
                for j in range(per_client):
                    ids.append(await submit(session, url, chain(i * 100000 + j), listeners[i].client_id))
                return ids

            submitted = [pid for ids in await asyncio.gather(*(client(i) for i in range(args.clients)))
                         for pid in ids]
            outcomes = await asyncio.gather(*(listeners[i // per_client].wait_for(pid)
                                              for i, pid in enumerate(submitted)))
            elapsed = time.perf_counter() - start
            cpu_per_prompt = (cpu_seconds(server.proc.pid) - cpu_start) / len(submitted) * 1000
            stop.set()
            await asyncio.gather(*probes)
            async with session.get(f"{url}/history") as resp:
                history = await resp.json()
            ok = [pid for pid in submitted if history.get(pid, {}).get("status", {}).get("status_str") == "success"]
            lost = len(submitted) - len(ok)
            results["load"] = {"prompts": len(submitted), "clients": args.clients, "in_history_ok": len(ok),
                               "lost": lost, "seconds": elapsed, "prompts_per_s": len(submitted) / elapsed,
                               "server_cpu_ms_per_prompt": cpu_per_prompt,
                               "events_success": sum(1 for kind, _ in outcomes if kind == "execution_success"),
                               "get_queue_ms": summary(samples_queue), "get_prompt_ms": summary(samples_prompt)}
            print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
            print(f"load: {len(submitted)} prompts from {args.clients} clients in {elapsed:.2f} s "
                  f"({len(submitted) / elapsed:.0f}/s); in history as success: {len(ok)}; lost: {lost}; "
                  f"server CPU {cpu_per_prompt:.2f} ms per prompt (all threads, probes included)")
            print("  " + latency_line("GET /queue while busy", samples_queue))
            print("  " + latency_line("GET /prompt while busy", samples_prompt))

            # 2. the worker holding the GIL (pure-Python loop) while GET /queue is probed
            stop, samples_busy = asyncio.Event(), []
            spin = [await submit(session, url, chain(900000 + k, middle="Spin", seconds=0.1), "client0")
                    for k in range(20)]
            task = asyncio.ensure_future(probe(session, url, "/queue", stop, samples_busy))
            await asyncio.gather(*(listeners[0].wait_for(pid) for pid in spin))
            stop.set()
            await task
            results["gil_busy_get_queue_ms"] = summary(samples_busy)
            print("  " + latency_line("GET /queue while a node holds the GIL", samples_busy))

            # 3. overhead per prompt: submit -> execution_success, one at a time, one client connected
            await wait_idle(session, url)
            for listener in listeners[1:]:
                await listener.close()
            baseline = []
            for _ in range(args.overhead):
                start = time.perf_counter()
                async with session.get(f"{url}/prompt") as resp:
                    await resp.read()
                baseline.append((time.perf_counter() - start) * 1000)
            results["http_round_trip_ms"] = summary(baseline)
            print("  " + latency_line("HTTP round trip (GET /prompt, idle server), for reference", baseline))
            overheads = []
            for k in range(args.overhead):
                start = time.perf_counter()
                pid = await submit(session, url, chain(800000 + k), "client0")
                _, finished = await listeners[0].wait_for(pid)
                overheads.append((finished - start) * 1000)
            results["overhead_ms"] = summary(overheads)
            print("  " + latency_line("submit -> execution_success (trivial prompt)", overheads) +
                  f" mean={statistics.mean(overheads):.2f} ms")
            await listeners[0].close()
        finally:
            server.stop()


def summary(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50": percentile(samples, 50), "p99": percentile(samples, 99),
            "max": max(samples, default=float("nan")), "mean": statistics.mean(samples) if samples else float("nan")}


TINY_MODEL = ROOT / "sdgraph" / "data" / "models" / "checkpoints" / "sdgraph-tiny"


def default_workflow() -> Path | None:
    """workflows/*txt2img*.json, when the default model it needs is there."""
    found = sorted((ROOT / "workflows").glob("*txt2img*.json")) if (ROOT / "workflows").is_dir() else []
    if not found or not TINY_MODEL.exists():
        return None
    return found[0]


def vary(prompt: dict[str, Any], i: int) -> dict[str, Any]:
    """A copy with every literal seed changed (so nothing is served from the cache)."""
    out = json.loads(json.dumps(prompt))
    for node in out.values():
        inputs = node.get("inputs", {})
        for name in SEED_INPUTS:
            if isinstance(inputs.get(name), int):
                inputs[name] = i
    return out


async def soak(args: argparse.Namespace, results: dict[str, Any]) -> None:
    workflow_path = args.workflow or default_workflow()
    base = Path(tempfile.mkdtemp(prefix="sdgraph-soak-"))
    if workflow_path is None:
        print(f"soak: no --workflow, and no workflows/*txt2img*.json with {TINY_MODEL.relative_to(ROOT)}; "
              "soaking the trivial graph on the test-node server")
        prompt, real = chain(0), False
    else:
        data = json.loads(Path(workflow_path).read_text())
        prompt, real = (data["prompt"] if "prompt" in data and "workflow" in data else data), True
        print(f"soak: {workflow_path} on `python -m sdgraph.server`")
    server = Server(base, real=real, extra=args.server_args)
    async with aiohttp.ClientSession(trust_env=False) as session:
        await server.ready(session)
        listener = Listener(session, server.url, "soak")
        await listener.start()
        curve: list[tuple[int, float]] = [(0, rss_mb(server.proc.pid))]
        failures = 0
        window = 2
        start = time.perf_counter()
        try:
            pending: list[str] = []
            for i in range(args.soak):
                variant = vary(prompt, i) if real else chain(i)
                pending.append(await submit(session, server.url, variant, "soak"))
                if len(pending) >= window:
                    kind, _ = await listener.wait_for(pending.pop(0))
                    failures += kind != "execution_success"
                done = i + 1
                if done % args.sample_every == 0 or done == args.soak:
                    curve.append((done, rss_mb(server.proc.pid)))
                    print(f"  {done:5d} prompts  RSS {curve[-1][1]:8.1f} MB  "
                          f"({time.perf_counter() - start:.0f} s)", flush=True)
            for pid in pending:
                kind, _ = await listener.wait_for(pid)
                failures += kind != "execution_success"
        finally:
            await listener.close()
            server.stop()
    warm = next((mb for n, mb in curve if n >= args.warmup), curve[-1][1])
    growth = curve[-1][1] - warm
    results["soak"] = {"workflow": str(workflow_path), "prompts": args.soak, "failures": failures,
                       "curve_mb": curve, "rss_after_warmup_mb": warm, "rss_end_mb": curve[-1][1],
                       "growth_after_warmup_mb": growth}
    print(f"soak: {args.soak} prompts, {failures} failed; RSS after {args.warmup} prompts {warm:.1f} MB, "
          f"at the end {curve[-1][1]:.1f} MB: growth {growth:+.1f} MB (target <= 50 MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--overhead", type=int, default=200, help="sequential prompts for the overhead figure")
    parser.add_argument("--no-load", action="store_true", help="skip the load test")
    parser.add_argument("--soak", type=int, default=0, metavar="N", help="run a soak of N prompts")
    parser.add_argument("--workflow", type=Path, help="API-format workflow for the soak")
    parser.add_argument("--warmup", type=int, default=100, help="prompts before the soak's reference RSS")
    parser.add_argument("--sample-every", type=int, default=50)
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                        help="extra flags for the soak's server (e.g. --cpu), last on the line")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    random.seed(0)
    if not args.no_load:
        asyncio.run(load(args, results))
    if args.soak:
        asyncio.run(soak(args, results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
