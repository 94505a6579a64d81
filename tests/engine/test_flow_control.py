"""Lazy inputs, graph expansion, ExecutionBlocker and async nodes behave as in ComfyUI.

`data/flow_reference.json` is what ComfyUI's own executor did with the workflows of `flow_nodes.FLOW_CASES`
(tools/comfy_reference/flow_semantics.py); each case runs twice in one executor here too, and every run must
match: which nodes were called how often, what they showed, which nodes ran and as which node they were shown,
what the lazy checks were given, the blocker's error, and how the run ended.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.paths import Dirs
from sdgraph.plugins import load_module_pack
from sdgraph.registry import Registry
from tests.engine import flow_nodes
from tests.engine.conftest import Recorder

REFERENCE = json.loads((Path(__file__).parent / "data" / "flow_reference.json").read_text())


@pytest.fixture
def flow_registry() -> Registry:
    registry = Registry()
    load_module_pack(registry, flow_nodes, "flow")
    assert not registry.problems, registry.problems
    return registry


@pytest.fixture
def flow_executor(flow_registry: Registry, tmp_path: Path) -> Executor:
    flow_nodes.reset()
    return Executor(flow_registry, Services(dirs=Dirs(base=tmp_path)))


def run(executor: Executor, workflow: dict[str, Any]) -> tuple[Any, Recorder]:
    flow_nodes.reset()
    recorder = Recorder()
    result = executor.run(json.loads(json.dumps(workflow)), listener=recorder)
    return result, recorder


def summarise(recorder: Recorder) -> dict[str, Any]:
    outputs = {}
    for data in recorder.of("executed"):
        outputs[data["node"]] = data["output"]
    return flow_nodes.summary(recorder.events, dict(flow_nodes.CALLS), outputs, flow_nodes.SEEN)


@pytest.mark.parametrize("case", sorted(flow_nodes.FLOW_CASES))
def test_each_case_runs_as_in_comfyui(flow_executor: Executor, case: str) -> None:
    for attempt, expected in enumerate(REFERENCE[case]):
        _, recorder = run(flow_executor, flow_nodes.FLOW_CASES[case])
        assert summarise(recorder) == expected, f"{case}, run {attempt + 1}"


def test_an_unasked_lazy_branch_never_runs_until_the_switch_turns(flow_executor: Executor) -> None:
    result, _ = run(flow_executor, flow_nodes.switch(True))
    assert result.ok and result.outputs["6"] == {"value": [12]}
    assert {"3", "4"}.isdisjoint(result.executed)
    result, _ = run(flow_executor, flow_nodes.switch(False))
    assert result.outputs["6"] == {"value": [25]} and {"3", "4"} <= set(result.executed)
    assert "1" not in result.executed and "2" not in result.executed  # the other branch is not re-run


def test_an_expanded_loop_is_cached_under_its_parent_and_rebuilt_when_an_input_changes(
        flow_executor: Executor) -> None:
    workflow = flow_nodes.FLOW_CASES["repeat_add"]
    first, recorder = run(flow_executor, workflow)
    assert first.outputs["3"] == {"value": [4 + 5 * 3]}
    assert {d["display_node"] for d in recorder.of("executing") if (d["node"] or "").startswith("2.")} == {"2"}
    changed = json.loads(json.dumps(workflow))
    changed["2"]["inputs"]["count"] = 6
    second, _ = run(flow_executor, changed)
    assert second.outputs["3"] == {"value": [4 + 6 * 3]}
    assert flow_nodes.CALLS["FlowAdd"] == 1  # the five links it shares with the last loop come from the cache


def test_nested_expansion_goes_as_deep_as_the_loop(flow_executor: Executor) -> None:
    workflow = json.loads(json.dumps(flow_nodes.FLOW_CASES["countdown"]))
    workflow["2"]["inputs"]["remaining"] = 40
    result, _ = run(flow_executor, workflow)
    assert result.ok and result.outputs["3"] == {"value": [50]}
    assert flow_nodes.CALLS["FlowCountdown"] == 41


def test_an_interrupted_expansion_keeps_what_it_finished(flow_executor: Executor) -> None:
    flow_nodes.HOOKS["add"] = lambda count: flow_executor.interrupt() if count == 3 else None
    workflow = flow_nodes.FLOW_CASES["repeat_add"]
    flow_nodes.CALLS.clear()
    result = flow_executor.run(json.loads(json.dumps(workflow)))
    assert result.status == "interrupted" and result.error["node_id"] == "2"  # shown as its parent
    assert result.error["node_type"] == "FlowRepeatAdd"
    again, _ = run(flow_executor, workflow)
    assert again.ok and again.outputs["3"] == {"value": [19]}
    assert flow_nodes.CALLS["FlowAdd"] == 2  # three of the five were done before the interrupt


def test_a_blocker_stops_its_branch_and_the_prompt_still_succeeds(flow_executor: Executor) -> None:
    result, recorder = run(flow_executor, flow_nodes.FLOW_CASES["gate_closed_message"])
    assert result.ok and "3" not in result.outputs and flow_nodes.CALLS["FlowShow"] == 0
    [error] = recorder.of("execution_error")
    assert error["node_id"] == "3" and error["exception_message"] == "Execution Blocked: not today"
    assert not any(event == "execution_error" for event, _ in result.messages)  # not the prompt's failure


def test_async_nodes_await_at_the_same_time(flow_executor: Executor) -> None:
    start = time.perf_counter()
    result, _ = run(flow_executor, flow_nodes.FLOW_CASES["async_pair"])
    elapsed = time.perf_counter() - start
    assert result.ok and result.outputs["5"] == {"value": [6]}
    (l0, l1), (r0, r1) = flow_nodes.TIMES["left"], flow_nodes.TIMES["right"]
    assert max(l0, r0) < min(l1, r1), "the two sleeps did not overlap"
    assert elapsed < 0.55, f"two overlapping 0.3 s sleeps took {elapsed:.2f} s"


def test_an_async_node_failure_is_that_nodes_error(flow_executor: Executor) -> None:
    workflow = json.loads(json.dumps(flow_nodes.FLOW_CASES["async_pair"]))
    workflow["1"]["inputs"]["value"] = -1
    result, _ = run(flow_executor, workflow)
    assert result.status == "error" and result.error["node_id"] in {"2", "3"}
    assert "a negative value" in result.error["exception_message"]


def test_an_interrupt_reaches_a_run_waiting_on_async_nodes(flow_executor: Executor) -> None:
    workflow = json.loads(json.dumps(flow_nodes.FLOW_CASES["async_pair"]))
    workflow["2"]["inputs"]["seconds"] = workflow["3"]["inputs"]["seconds"] = 5.0
    import threading
    threading.Timer(0.2, flow_executor.interrupt).start()
    start = time.perf_counter()
    result, _ = run(flow_executor, workflow)
    assert result.status == "interrupted" and time.perf_counter() - start < 2.0


@pytest.mark.parametrize("graph, expected", [
    ({"x": {"class_type": "NoSuchNode", "inputs": {}}}, "unknown type 'NoSuchNode'"),
    ({"1": {"class_type": "FlowNumber", "inputs": {"value": 1}}}, "which the prompt already has"),
    ({"x": {"class_type": "FlowAdd", "inputs": {"a": 1}}}, "required input 'b' is missing"),
    ({"x": {"class_type": "FlowAdd", "inputs": {"a": ["nowhere", 0], "b": 1}}}, "links to node 'nowhere'"),
    ({"x": {"class_type": "FlowAdd", "inputs": {"a": ["y", 0], "b": 1}},
      "y": {"class_type": "FlowAdd", "inputs": {"a": ["x", 0], "b": 1}}}, "cycle"),
])
def test_a_bad_expansion_is_the_expanding_nodes_error(flow_registry: Registry, tmp_path: Path, graph: dict,
                                                      expected: str) -> None:
    class Expander:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT", {"forceInput": True})}}

        RETURN_TYPES = ("INT",)
        FUNCTION = "go"

        def go(self, value):
            return {"result": ([next(iter(graph)), 0],), "expand": graph}

    flow_registry.add_comfy_mappings({"Expander": Expander}, None, "test")
    executor = Executor(flow_registry, Services(dirs=Dirs(base=tmp_path)))
    workflow = {"1": {"class_type": "FlowNumber", "inputs": {"value": 1}},
                "2": {"class_type": "Expander", "inputs": {"value": ["1", 0]}},
                "3": {"class_type": "FlowShow", "inputs": {"value": ["2", 0]}}}
    result = executor.run(workflow)
    assert result.status == "error" and result.error["node_id"] == "2", result.error
    assert expected in result.error["exception_message"]
