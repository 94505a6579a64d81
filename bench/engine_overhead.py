"""Engine overhead on graphs of trivial nodes: cold run, fully cached re-run, re-run after one leaf changed.

    python -m bench.engine_overhead [--sizes 1000 10000] [--repeats 5]
    python -m bench.engine_overhead --against /path/to/other/checkout [--repeats 9]

Each figure is the median over repeats (of process CPU time by default, since other work on a shared machine
inflates wall time) of a whole `Executor.run` on a workflow dict (parsing, validation,
planning, signatures, cache look-ups and the node calls), divided by the node count. The nodes do no work,
so this is the engine's own cost.

`--against` compares cold runs with another checkout of sdgraph (an older commit, say) side by side: one
long-lived process per checkout, the two taking turns run by run (in alternating order), so both see the same
machine load; it prints each checkout's median and the ratio.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

if __name__ == "__main__" and not __package__:
    # Run as a file, sys.path[0] is bench/ and `import sdgraph` could find another checkout's install: rerun as a
    # module of this checkout, whose root `python -m` puts first on sys.path.
    if Path.cwd().resolve() != Path(__file__).resolve().parents[1]:
        sys.exit(f"run it from the checkout root: python -m bench.{Path(__file__).stem}")
    os.execv(sys.executable, [sys.executable, "-m", f"bench.{Path(__file__).stem}", *sys.argv[1:]])

from sdgraph.cache import OutputCache  # noqa: E402
from sdgraph.execute import Executor  # noqa: E402
from sdgraph.node import Input, Int, Node, NodeOutput, Output  # noqa: E402
from sdgraph.registry import Registry  # noqa: E402
from sdgraph.types import INT  # noqa: E402

FAN_IN = 1000
CLOCK = time.process_time


class Leaf(Node):
    inputs = [Int("value", 0)]
    outputs = [Output(INT)]

    def run(self, value: int) -> tuple:
        return (value,)


class Step(Node):
    inputs = [Input("a", INT), Input("b", INT, optional=True), Int("add", 0)]
    outputs = [Output(INT)]

    def run(self, a: int, add: int, b: int = 0) -> tuple:
        return (a + b + add,)


class Hub(Node):
    inputs = [Input(f"in{i}", INT, optional=True) for i in range(FAN_IN)]
    outputs = [Output(INT)]

    def run(self, **values: int) -> tuple:
        return (sum(values.values()),)


class Sink(Node):
    output_node = True
    inputs = [Input("value", INT)]

    def run(self, value: int) -> NodeOutput:
        return NodeOutput((), None)


def chain(n: int) -> dict[str, Any]:
    wf: dict[str, Any] = {"0": {"class_type": "Leaf", "inputs": {"value": 1}}}
    for i in range(1, n - 1):
        wf[str(i)] = {"class_type": "Step", "inputs": {"a": [str(i - 1), 0], "add": 1}}
    wf["sink"] = {"class_type": "Sink", "inputs": {"value": [str(n - 2), 0]}}
    return wf


def fan_in(n: int) -> dict[str, Any]:
    """Leaves feeding hubs of up to 1,000 inputs each, the hubs summed by a chain into one sink."""
    wf: dict[str, Any] = {}
    hubs = max(1, round(n / (FAN_IN + 2)))
    leaves_per_hub = (n - 2 * hubs) // hubs
    for h in range(hubs):
        inputs = {}
        for i in range(leaves_per_hub):
            wf[f"l{h}_{i}"] = {"class_type": "Leaf", "inputs": {"value": i}}
            inputs[f"in{i}"] = [f"l{h}_{i}", 0]
        wf[f"hub{h}"] = {"class_type": "Hub", "inputs": inputs}
        prev = [f"sum{h - 1}", 0] if h else None
        wf[f"sum{h}"] = {"class_type": "Step", "inputs": {"a": [f"hub{h}", 0], "add": 0, **({"b": prev} if prev else {})}}
    wf["sink"] = {"class_type": "Sink", "inputs": {"value": [f"sum{hubs - 1}", 0]}}
    return wf


def lattice(n: int) -> dict[str, Any]:
    side = int(math.sqrt(n))
    wf: dict[str, Any] = {}
    for i in range(side):
        for j in range(side):
            key = f"{i}_{j}"
            if i == 0 and j == 0:
                wf[key] = {"class_type": "Leaf", "inputs": {"value": 1}}
            elif i == 0 or j == 0:
                wf[key] = {"class_type": "Step", "inputs": {"a": [f"{max(i - 1, 0)}_{max(j - 1, 0) if i == 0 else j}", 0], "add": 1}}
            else:
                wf[key] = {"class_type": "Step", "inputs": {"a": [f"{i - 1}_{j}", 0], "b": [f"{i}_{j - 1}", 0], "add": 1}}
    wf["sink"] = {"class_type": "Sink", "inputs": {"value": [f"{side - 1}_{side - 1}", 0]}}
    return wf


def change_one_leaf(wf: dict[str, Any], round_: int) -> dict[str, Any]:
    """A copy with one literal changed: the source node of the chain/lattice, or one leaf of the fan-in."""
    leaf = "l0_0" if "l0_0" in wf else ("0" if "0" in wf else "0_0")
    changed = dict(wf)
    changed[leaf] = {"class_type": "Leaf", "inputs": {"value": 1000 + round_}}
    return changed


def registry() -> Registry:
    reg = Registry()
    reg.add_native([Leaf, Step, Hub, Sink], "bench")
    assert not reg.problems, reg.problems
    return reg


def timed(fn: Callable[[], Any]) -> float:
    start = CLOCK()
    result = fn()
    elapsed = CLOCK() - start
    assert result.ok, result.error or result.node_errors
    return elapsed


def measure(shape: Callable[[int], dict[str, Any]], n: int, repeats: int) -> dict[str, float]:
    reg = registry()
    wf = shape(n)
    nodes = len(wf)
    cold, cached, leaf = [], [], []
    for r in range(repeats):
        executor = Executor(reg, cache=OutputCache(max_entries=10 * nodes))
        cold.append(timed(lambda: executor.run(wf)))
        cached.append(timed(lambda: executor.run(wf)))
        leaf.append(timed(lambda: executor.run(change_one_leaf(wf, r))))
    return {"nodes": nodes, "cold_us": statistics.median(cold) / nodes * 1e6,
            "cached_ms": statistics.median(cached) * 1e3, "cached_us": statistics.median(cached) / nodes * 1e6,
            "leaf_us": statistics.median(leaf) / nodes * 1e6}


SHAPES: dict[str, Callable[[int], dict[str, Any]]] = {"chain": chain, "fan-in": fan_in, "lattice": lattice}


def serve_cold_runs() -> None:
    """One side of `--against`: read `shape size` lines; for each, one cold run in a new executor; print its µs per node."""
    reg = registry()
    workflows: dict[tuple[str, int], dict[str, Any]] = {}
    for line in sys.stdin:
        name, size = line.split()
        wf = workflows.setdefault((name, int(size)), SHAPES[name](int(size)))
        executor = Executor(reg, cache=OutputCache(max_entries=10 * len(wf)))
        print(json.dumps(timed(lambda: executor.run(wf)) / len(wf) * 1e6), flush=True)


def side_by_side(other: Path, sizes: list[int], repeats: int) -> None:
    """Cold µs/node here and in `other`, the two processes taking turns; round 0 warms both up."""
    trees = {"this": Path(__file__).resolve().parents[1], "other": other.resolve()}
    # Both sides run this file's code (an older checkout's bench may lack --serve) on their own checkout's sdgraph.
    serve = f"import runpy; runpy.run_path({str(Path(__file__).resolve())!r}, run_name='bench')['serve_cold_runs']()"
    workers = {name: subprocess.Popen([sys.executable, "-c", serve], cwd=root,
                                      env={**os.environ, "PYTHONPATH": str(root)}, stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True) for name, root in trees.items()}
    runs: dict[tuple[str, str, int], list[float]] = {}
    try:
        for round_ in range(repeats + 1):
            for name in SHAPES:
                for size in sizes:
                    for tree in (("this", "other") if round_ % 2 else ("other", "this")):
                        worker = workers[tree]
                        assert worker.stdin is not None and worker.stdout is not None
                        worker.stdin.write(f"{name} {size}\n")
                        worker.stdin.flush()
                        value = json.loads(worker.stdout.readline())
                        if round_:
                            runs.setdefault((tree, name, size), []).append(value)
    finally:
        for worker in workers.values():
            if worker.stdin is not None:
                worker.stdin.close()
            worker.wait()
    print(f"cold µs/node, median of {repeats}, side by side with {trees['other']}")
    print(f"{'graph':<8} {'size':>6} {'this':>8} {'other':>8} {'ratio':>6}")
    for name in SHAPES:
        for size in sizes:
            mine, theirs = (statistics.median(runs[(tree, name, size)]) for tree in ("this", "other"))
            print(f"{name:<8} {size:>6} {mine:>8.1f} {theirs:>8.1f} {mine / theirs:>6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wall", action="store_true",
                        help="time with the wall clock instead of this process's CPU time (noisy on a busy machine)")
    parser.add_argument("--against", type=Path, metavar="CHECKOUT",
                        help="compare cold runs with another checkout of sdgraph, side by side")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.wall else time.process_time
    if args.against is not None:
        return side_by_side(args.against, args.sizes, args.repeats)
    print(f"clock: {'wall' if args.wall else 'process CPU time'}; median of {args.repeats} repeats")
    print(f"{'graph':<8} {'nodes':>6} {'cold µs/node':>13} {'cached ms':>10} {'cached µs/node':>15} "
          f"{'1 leaf µs/node':>15}")
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for name, shape in SHAPES.items():
        for size in args.sizes:
            row = rows[(name, size)] = measure(shape, size, args.repeats)
            print(f"{name:<8} {row['nodes']:>6} {row['cold_us']:>13.1f} {row['cached_ms']:>10.2f} "
                  f"{row['cached_us']:>15.1f} {row['leaf_us']:>15.1f}")
    if len(args.sizes) > 1:
        small, large = min(args.sizes), max(args.sizes)
        print(f"\nlinearity: cold µs/node at {large} divided by at {small} (1.0 = linear)")
        for name in ("chain", "fan-in", "lattice"):
            print(f"  {name:<8} {rows[(name, large)]['cold_us'] / rows[(name, small)]['cold_us']:.2f}")


if __name__ == "__main__":
    main()
