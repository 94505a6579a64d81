"""The schedule: following a plan gives the order the graph of waits gives, and leaving it mid-way loses nothing."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.paths import Dirs
from sdgraph.plugins import load_module_pack
from sdgraph.registry import Registry
from sdgraph.schedule import Schedule
from tests.engine import flow_nodes
from tests.engine.conftest import Recorder


class Graph:
    """Nodes "0".."n-1" in topological order, each linked to some earlier ones; `done` holds finished nodes."""

    def __init__(self, links: dict[str, list[str]]) -> None:
        self.links = links
        self.order = {node_id: i for i, node_id in enumerate(links)}
        self.done: set[str] = set()

    def needs(self, node_id: str) -> list[str]:
        return [src for src in self.links[node_id] if src not in self.done]

    def rank(self, node_id: str) -> tuple[int, ...]:
        return (0, self.order[node_id])

    def schedule(self) -> Schedule:
        return Schedule(self.rank, self.needs)


def random_graph(seed: int, size: int = 40) -> Graph:
    rng = random.Random(seed)
    links = {str(i): [str(j) for j in rng.sample(range(i), min(i, rng.randint(0, 3)))] for i in range(size)}
    return Graph(links)


def drain(graph: Graph, schedule: Schedule, on_pop: Any = None) -> list[str]:
    ran = []
    while schedule:
        node_id = schedule.pop()
        assert node_id is not None
        if on_pop is not None and on_pop(schedule, node_id):
            continue
        ran.append(node_id)
        graph.done.add(node_id)
        schedule.done()
    return ran


def test_following_the_plan_runs_what_the_graph_of_waits_runs_in_the_same_order() -> None:
    for seed in range(20):
        graph = random_graph(seed)
        by_waits = graph.schedule()
        by_waits.add("39")
        expected = drain(graph, by_waits)
        graph.done.clear()
        needed = set(expected)
        followed = graph.schedule()
        followed.follow([node_id for node_id in graph.links if node_id in needed])
        assert drain(graph, followed) == expected


def test_a_wait_mid_plan_runs_the_new_source_first_then_every_node_left() -> None:
    # 0 -> 1 -> 2 -> ... -> 9, and "x" (off the plan) that node 3 asks for once it runs
    links = {str(i): [str(i - 1)] if i else [] for i in range(10)}
    links["x"] = []
    graph = Graph(links)
    schedule = graph.schedule()
    schedule.follow([str(i) for i in range(10)])
    asked = set()

    def ask_once(schedule: Schedule, node_id: str) -> bool:
        if node_id == "3" and "x" not in asked:
            asked.add("x")
            schedule.wait_for("x")
            schedule.requeue()
            return True
        return False

    assert drain(graph, schedule, ask_once) == ["0", "1", "2", "x", "3", "4", "5", "6", "7", "8", "9"]


def test_a_hold_mid_plan_lets_the_nodes_that_do_not_wait_for_it_run_and_the_rest_after_its_release() -> None:
    # two chains: a0 -> a1 -> a2 and b0 -> b1 -> b2, interleaved in the plan; a1 holds (an async call)
    links = {"a0": [], "b0": [], "a1": ["a0"], "b1": ["b0"], "a2": ["a1"], "b2": ["b1"]}
    graph = Graph(links)
    schedule = graph.schedule()
    schedule.follow(list(links))
    releases = []

    def hold_a1(schedule: Schedule, node_id: str) -> bool:
        if node_id == "a1" and not releases:
            releases.append(schedule.hold())
            schedule.requeue()
            return True
        return False

    ran = []
    while schedule:
        node_id = schedule.pop()
        if node_id is None:
            assert schedule.held
            releases[0]()
            continue
        if hold_a1(schedule, node_id):
            continue
        ran.append(node_id)
        graph.done.add(node_id)
        schedule.done()
    assert ran == ["a0", "b0", "b1", "b2", "a1", "a2"]


def test_a_lazy_switch_and_an_expansion_early_in_a_long_prompt_run_every_node_after_them(tmp_path: Path) -> None:
    registry = Registry()
    load_module_pack(registry, flow_nodes, "flow")
    executor = Executor(registry, Services(dirs=Dirs(base=tmp_path)))
    workflow: dict[str, Any] = {
        "1": {"class_type": "FlowNumber", "inputs": {"value": 2}},
        "2": {"class_type": "FlowNumber", "inputs": {"value": 5}},
        "3": {"class_type": "FlowSwitch", "inputs": {"condition": False, "on_true": ["1", 0], "on_false": ["2", 0]}},
        "4": {"class_type": "FlowRepeatAdd", "inputs": {"value": ["3", 0], "step": 1, "count": 3}},
    }
    for i in range(5, 30):
        workflow[str(i)] = {"class_type": "FlowAdd", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    workflow["30"] = {"class_type": "FlowShow", "inputs": {"value": ["29", 0]}}
    flow_nodes.reset()
    recorder = Recorder()
    result = executor.run(json.loads(json.dumps(workflow)), listener=recorder)
    assert result.ok, result.error
    assert recorder.of("executed")[-1]["output"] == {"value": [5 + 3 + 25]}
    ran = [d["display_node"] for d in recorder.of("executing") if d.get("node") is not None]
    assert [n for n in ran if n not in ("1", "2", "3", "4")] == [str(i) for i in range(5, 31)]
    assert "1" not in ran  # the branch the switch did not pick
