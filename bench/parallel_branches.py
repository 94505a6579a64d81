"""A workflow whose CPU-side branch (load, resize, save a picture) overlaps sampling: parallel against --sequential.

txt2img on the default model (the sampler, text encoders and VAE on the accelerator worker) beside a branch that
loads a picture, resizes it to --size with Lanczos and saves it as PNG (on the CPU). Both executors are built in
this process with the cache off, so every run computes everything; runs alternate between the two, median of
--rounds. On a GPU the branches share nothing; on this 2-core CPU they share the cores, so the gain is what the
CPU-side work leaves idle (PNG compression, file I/O, Pillow's resampling).

    python -m bench.parallel_branches [--rounds 5] [--size 1536] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sdgraph.runtime import RuntimeOptions, create_executor

ROOT = Path(__file__).resolve().parents[1]


def workflow(size: int, steps: int, seed: int) -> dict:
    wf = json.loads((ROOT / "workflows" / "txt2img.json").read_text())
    wf["3"]["inputs"].update(steps=steps, seed=seed)
    wf["20"] = {"class_type": "LoadImage", "inputs": {"image": "red_square_left.png"}}
    wf["21"] = {"class_type": "ImageScale", "inputs": {"image": ["20", 0], "upscale_method": "lanczos",
                                                       "width": size, "height": size, "crop": "disabled"}}
    wf["22"] = {"class_type": "SaveImage", "inputs": {"images": ["21", 0], "filename_prefix": "resized"}}
    return wf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=1536)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sdgraph-parallel-") as base:
        shutil.copytree(ROOT / "workflows" / "input", Path(base) / "input")
        executors = {mode: create_executor(RuntimeOptions(base_dir=Path(base), no_cache=True, sequential=mode == "sequential"))
                     for mode in ("parallel", "sequential")}
        times: dict[str, list[float]] = {mode: [] for mode in executors}
        for mode, executor in executors.items():  # warm-up: models loaded, code paths compiled
            assert executor.run(workflow(args.size, args.steps, 0)).ok
        for round_ in range(args.rounds):
            for mode, executor in executors.items():
                start = time.perf_counter()
                result = executor.run(workflow(args.size, args.steps, round_ + 1))
                times[mode].append(time.perf_counter() - start)
                assert result.ok, result.error
            print(f"round {round_ + 1}: parallel {times['parallel'][-1]:.2f} s, "
                  f"sequential {times['sequential'][-1]:.2f} s")
    par, seq = statistics.median(times["parallel"]), statistics.median(times["sequential"])
    print(f"\nmedian of {args.rounds}: parallel {par:.2f} s, sequential {seq:.2f} s, sequential / parallel = "
          f"{seq / par:.2f}x")


if __name__ == "__main__":
    main()
