"""Throughput of queued txt2img prompts: batched (one group, sampler calls merged) against one by one.

A real aiohttp server on loopback over the default model, its worker held back until --prompts prompts (the
txt2img workflow, each with its own seed and text) are queued in one POST /prompt/batch; then the worker starts
and the time until the queue is empty is measured. Two executors in this process, `--batch-max 16` and
`--batch-max 1` (their models loaded once, the disk cache off, new seeds every round), rounds alternating, median
of --rounds. Each batched picture is also checked against the same prompt run alone: bit-identical latents.

    python -m bench.cross_prompt_batching [--prompts 16] [--rounds 3] [--steps 20]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from sdgraph.runtime import RuntimeOptions, create_executor
from sdgraph.server import ServerConfig, create_app
from sdgraph.server.app import start_worker
from sdgraph.server.state import STATE

ROOT = Path(__file__).resolve().parents[1]


def workflow(steps: int) -> dict[str, Any]:
    wf = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    wf["3"]["inputs"]["steps"] = steps
    wf["9"] = {"class_type": "SaveLatent", "inputs": {"samples": ["3", 0], "filename_prefix": "bench/latent"}}
    return wf


def overrides(prompts: int, round_: int) -> list[dict[str, Any]]:
    return [{"3.seed": round_ * 1000 + n, "6.text": f"a red circle, variation {n} of round {round_}"}
            for n in range(prompts)]


async def queue_and_drain(executor: Any, base: Path, steps: int, prompts: int, round_: int) -> tuple[float, list]:
    app = create_app(executor, ServerConfig(probe_torch=False, max_queue=prompts + 10), start_worker=False)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        resp = await client.post("/prompt/batch", json={"prompt": workflow(steps),
                                                        "overrides": overrides(prompts, round_)})
        reply = await resp.json()
        assert resp.status == 200, reply
        store = app[STATE].store
        start = time.perf_counter()
        start_worker(app)
        while store.remaining():
            await asyncio.sleep(0.005)
        seconds = time.perf_counter() - start
        history = [store.history_item(p)[p] for p in reply["prompt_ids"]]
        assert all(h["status"]["status_str"] == "success" for h in history), history
        return seconds, history
    finally:
        await client.close()


def latents(base: Path, history: list) -> list[Any]:
    from safetensors.torch import load_file

    files = [h["outputs"]["9"]["latents"][0] for h in history]
    return [load_file(str(base / "output" / f["subfolder"] / f["filename"]))["latent_tensor"] for f in files]


async def main_async(prompts: int, rounds: int, steps: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sdgraph-cobatch-") as tmp:
        bases = {mode: Path(tmp) / mode for mode in ("batched", "one-by-one")}
        executors = {mode: create_executor(RuntimeOptions(base_dir=base, disk_cache=False,
                                                          batch_max=prompts if mode == "batched" else 1))
                     for mode, base in bases.items()}
        times: dict[str, list[float]] = {mode: [] for mode in executors}
        for round_ in range(rounds + 1):  # round 0 warms up: models loaded, merges checked once
            outputs = {}
            for mode, executor in executors.items():
                seconds, history = await queue_and_drain(executor, bases[mode], steps, prompts, round_)
                outputs[mode] = latents(bases[mode], history)
                if round_:
                    times[mode].append(seconds)
                print(f"{'warm-up' if not round_ else f'round {round_}'}: {mode} {seconds:.2f} s "
                      f"({seconds / prompts:.3f} s a picture)")
            identical = sum(bool((a == b).all()) for a, b in zip(outputs["batched"], outputs["one-by-one"]))
            print(f"  batched latents identical to one-by-one: {identical} of {prompts}")
            assert identical == prompts
    batched, single = statistics.median(times["batched"]), statistics.median(times["one-by-one"])
    print(f"\nmedian of {rounds}, {prompts} prompts of {steps} steps: batched {batched:.2f} s "
          f"({batched / prompts:.3f} s a picture), one by one {single:.2f} s ({single / prompts:.3f} s a picture), "
          f"one-by-one / batched = {single / batched:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main_async(args.prompts, args.rounds, args.steps))


if __name__ == "__main__":
    main()
