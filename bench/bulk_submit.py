"""Queueing many prompts: 1,000 POST /prompt requests against one POST /prompt/batch, side by side.

A real aiohttp server on loopback over the pure-Python test nodes, its worker not started, so only admission
is timed (parse, validate, store in SQLite). Each round uses a fresh server and fresh variations (the value of
Number changes), median of the rounds.

    python -m bench.bulk_submit [--prompts 1000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from sdgraph.server import ServerConfig, create_app
from tests.server.nodes import chain, make_executor


async def fresh_client(base: Path, prompts: int) -> TestClient:
    config = ServerConfig(probe_torch=False, max_queue=prompts * 2 + 10)
    app = create_app(make_executor(base, None), config, start_worker=False)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def one_by_one(client: TestClient, prompts: int) -> float:
    start = time.perf_counter()
    for n in range(prompts):
        resp = await client.post("/prompt", json={"prompt": chain(n)})
        assert resp.status == 200, await resp.text()
    return time.perf_counter() - start


async def batched(client: TestClient, prompts: int) -> float:
    start = time.perf_counter()
    resp = await client.post("/prompt/batch", json={"prompt": chain(0),
                                                    "overrides": [{"1.value": n} for n in range(prompts)]})
    assert resp.status == 200 and (await resp.json())["count"] == prompts, await resp.text()
    return time.perf_counter() - start


async def main_async(prompts: int, rounds: int) -> None:
    single, batch = [], []
    for _ in range(rounds):
        for results, submit in ((single, one_by_one), (batch, batched)):
            with tempfile.TemporaryDirectory(prefix="sdgraph-bulk-") as base:
                client = await fresh_client(Path(base), prompts)
                try:
                    results.append(await submit(client, prompts))
                finally:
                    await client.close()
        print(f"{prompts} prompts: one request each {single[-1]:.2f} s, one batch {batch[-1]:.3f} s")
    print(f"\nmedian of {rounds}: one by one {statistics.median(single):.2f} s, batch {statistics.median(batch):.3f} s "
          f"({statistics.median(single) / statistics.median(batch):.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main_async(args.prompts, args.rounds))


if __name__ == "__main__":
    main()
