"""The executor: caching by signature, partial re-runs, errors, interrupts and events."""
from __future__ import annotations

from sdgraph.cache import OutputCache
from sdgraph.execute import Executor
from tests.engine.toy_nodes import CALLS, OUTSIDE_STATE, Slow


def chain() -> dict:
    return {
        "1": {"class_type": "Number", "inputs": {"value": 2}},
        "2": {"class_type": "Number", "inputs": {"value": 3}},
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}},
        "5": {"class_type": "Number", "inputs": {"value": 9}},  # not needed by any output
    }


def test_runs_only_what_outputs_need_in_order(executor, recorder):
    result = executor.run(chain(), listener=recorder)
    assert result.ok
    assert result.outputs == {"4": {"text": ["5"]}}
    assert result.executed.index("3") > max(result.executed.index("1"), result.executed.index("2"))
    assert "5" not in result.executed
    assert recorder.names()[:2] == ["execution_start", "execution_cached"]
    assert recorder.names()[-2:] == ["execution_success", "executing"]
    assert recorder.of("executing")[-1]["node"] is None
    assert recorder.of("executed") == [{"node": "4", "display_node": "4", "output": {"text": ["5"]},
                                        "prompt_id": result.prompt_id}]


def test_identical_rerun_executes_nothing(executor, recorder):
    executor.run(chain())
    before = dict(CALLS)
    result = executor.run(chain(), listener=recorder)
    assert result.executed == []
    assert sorted(result.cached) == ["1", "2", "3", "4"]
    assert dict(CALLS) == before
    assert recorder.of("execution_cached")[0]["nodes"] == result.cached
    assert result.outputs == {"4": {"text": ["5"]}}  # cached UI output is still reported


def test_changing_a_leaf_reruns_only_downstream(executor):
    executor.run(chain())
    changed = chain()
    changed["2"]["inputs"]["value"] = 10
    result = executor.run(changed)
    assert sorted(result.executed) == ["2", "3", "4"]
    assert result.outputs["4"] == {"text": ["12"]}


def test_meta_and_layout_do_not_invalidate_the_cache(executor):
    executor.run(chain())
    moved = chain()
    moved["3"]["_meta"] = {"title": "renamed", "pos": [10, 20]}
    assert executor.run(moved).executed == []


def test_changed_fingerprint_forces_rerun(executor):
    workflow = {"1": {"class_type": "Outside", "inputs": {"name": "f"}},
                "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    assert executor.run(workflow).outputs["2"] == {"text": ["1"]}
    assert executor.run(workflow).executed == []
    OUTSIDE_STATE["version"] = 2
    result = executor.run(workflow)
    assert result.executed == ["1", "2"]
    assert result.outputs["2"] == {"text": ["2"]}


def test_not_idempotent_node_always_reruns(executor):
    workflow = {"1": {"class_type": "Random", "inputs": {}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    first = executor.run(workflow).outputs["2"]
    second = executor.run(workflow).outputs["2"]
    assert first != second


def test_raising_node_names_itself_and_keeps_earlier_outputs(executor, recorder):
    workflow = chain()
    workflow["6"] = {"class_type": "Fail", "inputs": {"x": ["3", 0], "explode": True}}
    workflow["7"] = {"class_type": "Show", "inputs": {"value": ["6", 0]}}
    result = executor.run(workflow, listener=recorder)
    assert result.status == "error"
    error = result.error
    assert error["node_id"] == "6" and error["node_type"] == "Fail"
    assert error["exception_type"] == "ValueError" and error["exception_message"] == "boom"
    assert any("boom" in line for line in error["traceback"])
    assert recorder.of("execution_error") == [error]
    assert "execution_success" not in recorder.names()
    assert recorder.events[-1] == ("executing", {"node": None, "display_node": None, "prompt_id": result.prompt_id})
    # the engine keeps serving, and what ran before the failure is cached
    workflow["6"]["inputs"]["explode"] = False
    again = executor.run(workflow)
    assert again.ok
    assert {"1", "2", "3"} <= set(result.executed)
    assert not {"1", "2", "3"} & set(again.executed)
    assert {"6", "7"} <= set(again.executed)


def test_interrupt_between_nodes(executor, recorder):
    def on_event(event, data):
        recorder(event, data)
        if event == "executing" and data["node"] == "1":
            executor.interrupt()

    result = executor.run(chain(), listener=on_event)
    assert result.status == "interrupted"
    assert recorder.names()[-2:] == ["execution_interrupted", "executing"]
    assert result.executed == ["1"]
    assert executor.run(chain()).ok  # the flag is cleared for the next run


def test_interrupt_inside_a_long_node_at_its_next_progress_tick(executor, recorder):
    Slow.hook = lambda step: executor.interrupt() if step == 2 else None
    workflow = {"1": {"class_type": "Number", "inputs": {"value": 1}},
                "2": {"class_type": "Slow", "inputs": {"x": ["1", 0], "steps": 100}},
                "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    result = executor.run(workflow, listener=recorder)
    assert result.status == "interrupted"
    assert CALLS["Slow.step"] == 3
    assert result.error["node_id"] == "2"
    assert [p["value"] for p in recorder.of("progress")] == [1, 2]


def test_progress_events(executor, recorder):
    workflow = {"1": {"class_type": "Number", "inputs": {"value": 1}},
                "2": {"class_type": "Slow", "inputs": {"x": ["1", 0], "steps": 4}},
                "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    executor.run(workflow, listener=recorder)
    assert [(p["value"], p["max"], p["node"]) for p in recorder.of("progress")] == [(i, 4, "2") for i in range(1, 5)]


def test_hidden_inputs_are_filled(executor):
    result = executor.run({"7": {"class_type": "Prompted", "inputs": {}}})
    assert result.outputs["7"] == {"text": ["7:1"]}


def test_no_cache_mode_still_shares_outputs_within_a_run(registry):
    executor = Executor(registry, cache=OutputCache(max_entries=0))
    CALLS.clear()
    workflow = chain()
    workflow["6"] = {"class_type": "Show", "inputs": {"value": ["3", 0]}}
    executor.run(workflow)
    assert CALLS["Add"] == 1
    executor.run(workflow)
    assert CALLS["Add"] == 2


def test_cache_is_bounded_by_entries(registry):
    executor = Executor(registry, cache=OutputCache(max_entries=2))
    executor.run(chain())
    assert len(executor.cache) == 2


def test_default_policy_keeps_each_nodes_latest_output_only(registry):
    executor = Executor(registry, cache=OutputCache(keep_older=0))
    CALLS.clear()
    for value in range(10, 20):  # like a new seed per prompt: node 1 changes, node 2 does not
        workflow = chain()
        workflow["1"]["inputs"]["value"] = value
        assert executor.run(workflow).ok
    assert len(executor.cache) == 4  # nodes 1-4, latest outputs only: no growth with the number of runs
    assert CALLS["Add"] == 10
    assert executor.run(workflow).executed == []  # the latest run is still fully cached


def test_signatures_are_stable_across_processes(executor):
    import subprocess
    import sys

    code = (
        "from sdgraph.registry import Registry; from sdgraph.plugins import load_module_pack;"
        "from sdgraph.prepare import prepare; from sdgraph.signature import node_signature;"
        "from tests.engine import toy_nodes; from tests.engine.test_execute import chain;"
        "r = Registry(); load_module_pack(r, toy_nodes, 't'); p = prepare(chain(), r); k = {};"
        "[k.__setitem__(n, node_signature(p.nodes[n], None, k)) for n in p.plan]; print(k['4'])"
    )
    keys = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(keys) == 1 and len(keys.pop().strip()) == 64



def test_each_prompt_runs_inside_the_model_managers_prompt_scope(executor):
    import contextlib

    class Models:
        """What the executor sees of a model manager: a scope around each prompt (models it uses stay loaded)."""

        def __init__(self) -> None:
            self.seen: list[tuple[str, int]] = []

        @contextlib.contextmanager
        def prompt_scope(self):
            self.seen.append(("begin", CALLS["Add"]))
            yield
            self.seen.append(("end", CALLS["Add"]))

    executor.services.models = models = Models()
    CALLS.clear()
    assert executor.run(chain()).ok
    assert models.seen == [("begin", 0), ("end", 1)], "the nodes ran inside the scope"
    failing = {"1": {"class_type": "Number", "inputs": {"value": 1}},
               "2": {"class_type": "Fail", "inputs": {"x": ["1", 0], "explode": True}},
               "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    assert executor.run(failing).status == "error"
    assert [event for event, _ in models.seen] == ["begin", "end", "begin", "end"], "closed after a failure too"
