"""Nodes on different resources overlap; the accelerator runs one node at a time; results and each node's
events are those of the sequential run."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.node import Float, Input, Int, Node, NodeOutput, Output
from sdgraph.paths import Dirs
from sdgraph.registry import Registry
from sdgraph.resources import ACCELERATOR, CPU, IO, resource_of
from sdgraph.types import INT
from tests.engine.conftest import Recorder

BUSY = {"accelerator": 0, "most": 0}
LOCK = threading.Lock()


class Device(Node):
    """Stands for sampling: holds the accelerator for a while, reporting progress."""

    category = "test"
    resource = ACCELERATOR
    inputs = [Input("a", INT), Float("seconds", 0.3, min=0.0, max=5.0), Int("fail_at", -1, min=-1, max=100)]
    outputs = [Output(INT)]

    def run(self, a: int, seconds: float, fail_at: int) -> tuple:
        with LOCK:
            BUSY["accelerator"] += 1
            BUSY["most"] = max(BUSY["most"], BUSY["accelerator"])
        try:
            for step in range(3):
                time.sleep(seconds / 3)
                self.ctx.progress(step + 1, 3)
        finally:
            with LOCK:
                BUSY["accelerator"] -= 1
        return (a * 10,)


class Work(Node):
    """Stands for CPU-side work (loading, resizing, saving a picture)."""

    category = "test"
    inputs = [Input("a", INT), Float("seconds", 0.3, min=0.0, max=5.0), Int("fail", 0, min=0, max=1)]
    outputs = [Output(INT)]

    def run(self, a: int, seconds: float, fail: int) -> tuple:
        time.sleep(seconds)
        if fail:
            raise ValueError("the CPU branch failed")
        return (a + 1,)


class Source(Node):
    category = "test"
    inputs = [Int("value", 1, min=0, max=100)]
    outputs = [Output(INT)]

    def run(self, value: int) -> tuple:
        return (value,)


class Sink(Node):
    category = "test"
    output_node = True
    inputs = [Input("value", INT)]

    def run(self, value: int) -> NodeOutput:
        return NodeOutput((), {"value": [value]})


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    registry.add_native([Device, Work, Source, Sink], "parallel")
    assert not registry.problems
    BUSY.update(accelerator=0, most=0)
    return registry


def workflow(device_seconds: float = 0.3, cpu_seconds: float = 0.3, fail: int = 0) -> dict[str, Any]:
    """Two sampling-like nodes in a row on one branch, a CPU-side chain on the other."""
    return {"1": {"class_type": "Source", "inputs": {"value": 2}},
            "2": {"class_type": "Device", "inputs": {"a": ["1", 0], "seconds": device_seconds, "fail_at": -1}},
            "3": {"class_type": "Device", "inputs": {"a": ["2", 0], "seconds": device_seconds, "fail_at": -1}},
            "4": {"class_type": "Sink", "inputs": {"value": ["3", 0]}},
            "5": {"class_type": "Work", "inputs": {"a": ["1", 0], "seconds": cpu_seconds, "fail": fail}},
            "6": {"class_type": "Work", "inputs": {"a": ["5", 0], "seconds": cpu_seconds, "fail": 0}},
            "7": {"class_type": "Sink", "inputs": {"value": ["6", 0]}}}


def run(registry: Registry, tmp_path: Any, parallel: bool, wf: dict[str, Any]) -> tuple[Any, Recorder, float]:
    executor = Executor(registry, Services(dirs=Dirs(base=tmp_path)), parallel=parallel)
    recorder = Recorder()
    start = time.perf_counter()
    result = executor.run(wf, listener=recorder)
    return result, recorder, time.perf_counter() - start


def per_node(recorder: Recorder) -> dict[str, list[tuple[str, Any]]]:
    events: dict[str, list[tuple[str, Any]]] = {}
    for name, data in recorder.events:
        node = data.get("node")
        if name in ("executing", "progress", "executed") and node:
            events.setdefault(node, []).append((name, data.get("value", data.get("output"))))
    return events


def test_resources_are_declared_or_follow_the_node_s_sockets(registry: Registry) -> None:
    assert resource_of(registry.get("Device")) == ACCELERATOR and resource_of(registry.get("Work")) == CPU
    from sdgraph.node import define

    class LoadsModel(Node):
        inputs = [Int("x", 0)]
        outputs = [Output("MODEL")]

        def run(self, x: int) -> tuple:
            return (None,)

    class Reads(Node):
        resource = IO
        outputs = [Output(INT)]

        def run(self) -> tuple:
            return (1,)

    assert resource_of(define(LoadsModel)) == ACCELERATOR and resource_of(define(Reads)) == IO


def test_the_cpu_branch_overlaps_the_accelerator_with_the_same_results_and_events(registry: Registry,
                                                                                 tmp_path: Any) -> None:
    sequential, seq_events, seq_seconds = run(registry, tmp_path / "a", False, workflow())
    parallel, par_events, par_seconds = run(registry, tmp_path / "b", True, workflow())
    assert sequential.ok and parallel.ok
    assert parallel.outputs == sequential.outputs == {"4": {"value": [200]}, "7": {"value": [4]}}
    assert per_node(par_events) == per_node(seq_events)  # each node's own events, in the same order
    assert sorted(parallel.executed) == sorted(sequential.executed)
    assert BUSY["most"] == 1, "two nodes held the accelerator at once"
    print(f"sequential {seq_seconds:.2f} s, parallel {par_seconds:.2f} s")
    assert seq_seconds > 1.1 and par_seconds < 0.9, (seq_seconds, par_seconds)


def test_a_failing_cpu_branch_waits_for_the_accelerator_node_it_overlapped(registry: Registry,
                                                                          tmp_path: Any) -> None:
    result, recorder, _ = run(registry, tmp_path, True, workflow(device_seconds=0.6, fail=1))
    assert result.status == "error" and result.error["node_id"] == "5"
    assert BUSY["accelerator"] == 0  # nothing is still running on the accelerator when the run has ended
    assert recorder.names()[-2:] == ["execution_error", "executing"]


def test_an_interrupt_stops_the_node_on_the_accelerator(registry: Registry, tmp_path: Any) -> None:
    executor = Executor(registry, Services(dirs=Dirs(base=tmp_path)))
    threading.Timer(0.15, executor.interrupt).start()
    result = executor.run(workflow(device_seconds=3.0, cpu_seconds=0.0))
    assert result.status == "interrupted" and BUSY["accelerator"] == 0
