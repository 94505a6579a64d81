"""A second process re-running a finished workflow from the on-disk output cache, against a cold run.

Each round takes a fresh base directory: `sdgraph run WORKFLOW` there once (cold: nothing cached, the model
loaded, every node run), then again in a new process (warm: the outputs of the first on disk). Both are whole
processes, timed on the wall clock from start to exit, so the warm figure includes Python's start and imports.

    python bench/disk_cache.py [--workflow workflows/txt2img.json] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_run(workflow: Path, base: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "sdgraph", "run", str(workflow), "--base-dir", str(base), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sdgraph run failed:\n{done.stderr[-2000:]}")
    return elapsed, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", type=Path, default=ROOT / "workflows" / "txt2img.json")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cold, warm = [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="sdgraph-disk-bench-") as base:
            seconds, first = timed_run(args.workflow, Path(base))
            cold.append(seconds)
            seconds, second = timed_run(args.workflow, Path(base))
            warm.append(seconds)
            ran = len(second.get("executed", []))
            print(f"cold {cold[-1]:.2f} s ({len(first.get('executed', []))} nodes ran)   "
                  f"warm {warm[-1]:.2f} s ({ran} ran)")
    print(f"\nmedian of {args.rounds}: cold {statistics.median(cold):.2f} s, warm {statistics.median(warm):.2f} s, "
          f"cold / warm = {statistics.median(cold) / statistics.median(warm):.2f}x")


if __name__ == "__main__":
    main()
