"""Resident memory while one process runs many different checkpoints, with and without a RAM budget for models.

    python -m bench.ram_budget [--checkpoints 10] [--rounds 2] [--width 4] [--budget-mb 160]

Writes `--checkpoints` different random SD 1.x checkpoints in the real single-file layout (tiny UNet widened
`--width` times; about 61 MB each at width 4) to a temporary folder, then runs a txt2img workflow on each in turn,
`--rounds` times, in one executor (a new seed each step; the output cache keeps every earlier output, so cached
MODEL/CLIP/VAE handles of every checkpoint stay referenced). Two fresh processes run it side by side: one with
`--budget-mb` as the model manager's RAM budget, one with no limit. Per step it reports the process's RSS
(VmRSS), the bytes the manager counts in RAM and its disk loads.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    if Path.cwd().resolve() != Path(__file__).resolve().parents[1]:
        sys.exit(f"run it from the checkout root: python -m bench.{Path(__file__).stem}")
    os.execv(sys.executable, [sys.executable, "-m", f"bench.{Path(__file__).stem}", *sys.argv[1:]])

MB = 1024 ** 2
UNLIMITED = 1 << 50


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def workflow(ckpt: str, seed: int) -> dict[str, Any]:
    from tests.sd.test_workflow_residency import txt2img

    return txt2img(seed, ckpt)


def child(base: Path, names: list[str], rounds: int, budget: int) -> None:
    """Run every checkpoint `rounds` times in one executor; one JSON line per step on stdout."""
    from sdgraph.cache import OutputCache
    from sdgraph.context import Services
    from sdgraph.execute import Executor
    from sdgraph.models import ModelManager
    from sdgraph.paths import Dirs
    from tests.sd.test_workflow_residency import registry

    manager = ModelManager("cpu", ram_budget_bytes=budget)
    executor = Executor(registry(), Services(dirs=Dirs(base=base, extra_model_roots=[]), models=manager),
                        OutputCache(keep_older=None))
    print(json.dumps({"step": -1, "rss": rss_bytes()}), flush=True)
    for step in range(rounds * len(names)):
        result = executor.run(workflow(names[step % len(names)], seed=step))
        if not result.ok:
            raise SystemExit(f"step {step}: {result.error}")
        print(json.dumps({"step": step, "ckpt": names[step % len(names)], "rss": rss_bytes(),
                          "models": manager.ram_bytes(), "disk_loads": manager.stats.disk_loads}), flush=True)


def run_child(base: Path, names: list[str], rounds: int, budget: int) -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "bench.ram_budget", "--child", str(base), "--rounds", str(rounds),
           "--budget-bytes", str(budget), "--names", *names]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def prepare(base: Path, count: int, width: int) -> list[str]:
    from tests.sd.tiny_models import save_many_checkpoints

    for sub in ("input", "output", "temp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return [p.name for p in save_many_checkpoints(base / "models" / "checkpoints", count, width=width)]


def report(budgeted: list[dict[str, Any]], unbounded: list[dict[str, Any]], budget: int) -> None:
    print(f"budget {budget / MB:.0f} MB | RSS at start: {budgeted[0]['rss'] / MB:.0f} MB with it, "
          f"{unbounded[0]['rss'] / MB:.0f} MB without")
    print("| step | checkpoint | RSS, budget (MB) | models in RAM (MB) | disk loads | RSS, no limit (MB) | "
          "models in RAM (MB) |")
    print("|---|---|---|---|---|---|---|")
    for a, b in zip(budgeted[1:], unbounded[1:]):
        print(f"| {a['step']} | {a['ckpt']} | {a['rss'] / MB:.0f} | {a['models'] / MB:.0f} | {a['disk_loads']} | "
              f"{b['rss'] / MB:.0f} | {b['models'] / MB:.0f} |")
    peak_a, peak_b = (max(r["rss"] for r in rows) for rows in (budgeted, unbounded))
    print(f"peak RSS {peak_a / MB:.0f} MB with the budget, {peak_b / MB:.0f} MB without ({peak_a / peak_b:.2f}x); "
          f"largest models-in-RAM count {max(r['models'] for r in budgeted[1:]) / MB:.0f} MB "
          f"(budget {budget / MB:.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--width", type=int, default=4, help="UNet channel multiplier of the random checkpoints")
    parser.add_argument("--budget-mb", type=float, default=160.0)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--budget-bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--names", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.names, args.rounds, args.budget_bytes)
        return
    budget = int(args.budget_mb * MB)
    with tempfile.TemporaryDirectory(prefix="sdgraph-ram-") as tmp:
        names = prepare(Path(tmp), args.checkpoints, args.width)
        budgeted = run_child(Path(tmp), names, args.rounds, budget)
        unbounded = run_child(Path(tmp), names, args.rounds, UNLIMITED)
    report(budgeted, unbounded, budget)


if __name__ == "__main__":
    main()
