"""Native nodes get lazy inputs, expansion, blockers and async functions through the node API."""
from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.expansion import Subgraph
from sdgraph.node import Boolean, ExecutionBlocker, Hidden, Input, Int, Node, NodeOutput, Output
from sdgraph.paths import Dirs
from sdgraph.registry import Registry
from sdgraph.types import INT
from tests.engine.conftest import Recorder

RAN: list[str] = []


class Value(Node):
    category = "test"
    inputs = [Int("value", 0, min=-1000, max=1000)]
    outputs = [Output(INT)]

    def run(self, value: int) -> tuple:
        RAN.append(f"Value{value}")
        return (value,)


class Plus(Node):
    category = "test"
    inputs = [Input("a", INT), Int("b", 1, min=-1000, max=1000)]
    outputs = [Output(INT)]

    def run(self, a: int, b: int) -> tuple:
        RAN.append("Plus")
        return (a + b,)


class Choose(Node):
    """Picks one of two lazy inputs."""

    category = "test"
    inputs = [Boolean("first", True), Input("a", INT, lazy=True), Input("b", INT, lazy=True)]
    outputs = [Output(INT)]

    def check_lazy_status(self, first: bool, a: Any = None, b: Any = None) -> list[str]:
        return ["a"] if first else ["b"]

    def run(self, first: bool, a: Any = None, b: Any = None) -> tuple:
        return (a if first else b,)


class Times(Node):
    """Adds `a` to itself `n` times by expanding into a chain of Plus nodes."""

    category = "test"
    inputs = [Input("a", INT), Int("n", 2, min=1, max=50)]
    outputs = [Output(INT)]

    def run(self, a: int, n: int) -> NodeOutput:
        graph = Subgraph()
        total: Any = a
        for _ in range(n - 1):
            total = graph.node("Plus", a=total, b=a).out(0)
        return NodeOutput((total,), expand=graph.finalize())


class Wait(Node):
    category = "test"
    inputs = [Input("a", INT)]
    outputs = [Output(INT)]

    async def run(self, a: int) -> tuple:
        await asyncio.sleep(0.25)
        return (a,)


class Stop(Node):
    category = "test"
    inputs = [Input("a", INT)]
    outputs = [Output(INT)]

    def run(self, a: int) -> tuple:
        return (ExecutionBlocker(None),)


class Where(Node):
    """Reports the link its input came by and what the dynamic prompt says of that node."""

    category = "test"
    inputs = [Input("a", INT, rawLink=True), Hidden("dynprompt", "DYNPROMPT")]
    outputs = [Output("STRING")]

    def run(self, a: list, dynprompt: Any) -> tuple:
        return (f"{a[0]}:{a[1]}:{dynprompt.get_node(a[0])['class_type']}",)


class Out(Node):
    category = "test"
    output_node = True
    inputs = [Input("value", "*")]

    def run(self, value: Any) -> NodeOutput:
        RAN.append("Out")
        return NodeOutput((), {"value": [value]})


@pytest.fixture
def executor(tmp_path) -> Executor:
    RAN.clear()
    registry = Registry()
    registry.add_native([Value, Plus, Choose, Times, Wait, Stop, Where, Out], "native-flow")
    assert not registry.problems, registry.problems
    return Executor(registry, Services(dirs=Dirs(base=tmp_path)))


def n(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def test_lazy_inputs_are_declared_as_comfyui_declares_them(executor: Executor) -> None:
    described = executor.registry.describe()["Choose"]["input"]["required"]
    assert described["a"] == ["INT", {"lazy": True}]
    assert executor.registry.describe()["Where"]["input"]["required"]["a"] == ["INT", {"rawLink": True}]


@pytest.mark.parametrize("first, expected, skipped", [(True, 1, "Value2"), (False, 2, "Value1")])
def test_a_native_lazy_check_picks_what_runs(executor: Executor, first: bool, expected: int, skipped: str) -> None:
    result = executor.run({"1": n("Value", value=1), "2": n("Value", value=2),
                           "3": n("Choose", first=first, a=["1", 0], b=["2", 0]), "4": n("Out", value=["3", 0])})
    assert result.ok and result.outputs["4"] == {"value": [expected]}
    assert skipped not in RAN


def test_a_subgraph_built_by_a_native_node_runs_in_its_place(executor: Executor) -> None:
    recorder = Recorder()
    result = executor.run({"1": n("Value", value=3), "2": n("Times", a=["1", 0], n=4), "3": n("Out", value=["2", 0])},
                          listener=recorder)
    assert result.ok and result.outputs["3"] == {"value": [12]}
    new = [d["node"] for d in recorder.of("executing") if d["node"] and d["node"].startswith("2.")]
    assert new == ["2.0.0.1", "2.0.0.2", "2.0.0.3"]  # <parent>.<call>.<graph>.<node>, as GraphBuilder names them


def test_an_async_native_node_overlaps_another(executor: Executor) -> None:
    start = time.perf_counter()
    result = executor.run({"1": n("Value", value=5), "2": n("Wait", a=["1", 0]), "3": n("Wait", a=["1", 0]),
                           "4": n("Out", value=["2", 0]), "5": n("Out", value=["3", 0])})
    assert result.ok and result.outputs["4"] == result.outputs["5"] == {"value": [5]}
    assert time.perf_counter() - start < 0.45


def test_a_native_blocker_stops_only_its_branch(executor: Executor) -> None:
    result = executor.run({"1": n("Value", value=5), "2": n("Stop", a=["1", 0]), "3": n("Out", value=["2", 0]),
                           "4": n("Out", value=["1", 0])})
    assert result.ok and "3" not in result.outputs and result.outputs["4"] == {"value": [5]}


def test_a_raw_link_and_the_dynamic_prompt_reach_the_node(executor: Executor) -> None:
    result = executor.run({"1": n("Value", value=5), "2": n("Where", a=["1", 0]), "3": n("Out", value=["2", 0])})
    assert result.ok and result.outputs["3"] == {"value": ["1:0:Value"]}
