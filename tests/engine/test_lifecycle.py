"""The prompt lifecycle the engine owns: prepare, execute, record, then announce the end; keys from what nodes get."""
from __future__ import annotations

import pytest

from sdgraph.execute import RunResult
from sdgraph.workflow import parse_workflow
from tests.engine import toy_nodes
from tests.engine.toy_nodes import CALLS


def two_ids() -> dict:
    return {
        "10": {"class_type": "WhoAmI", "inputs": {}},
        "11": {"class_type": "Show", "inputs": {"value": ["10", 0]}},
        "20": {"class_type": "WhoAmI", "inputs": {}},
        "21": {"class_type": "Show", "inputs": {"value": ["20", 0]}},
    }


def test_nodes_taking_their_unique_id_do_not_share_a_cache_entry(executor):
    result = executor.run(two_ids())
    assert result.ok
    assert result.outputs == {"11": {"text": ["10"]}, "21": {"text": ["20"]}}
    assert CALLS["WhoAmI"] == 2
    again = executor.run(two_ids())
    assert again.executed == [] and again.outputs == result.outputs


def test_a_node_reading_the_prompt_reruns_when_the_prompt_changes(executor):
    workflow = {"1": {"class_type": "Prompted", "inputs": {}},
                "2": {"class_type": "Number", "inputs": {"value": 1}},
                "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    assert executor.run(workflow).outputs["1"] == {"text": ["1:3"]}
    assert executor.run(workflow).executed == []
    workflow["4"] = {"class_type": "Number", "inputs": {"value": 5}}  # the prompt it embeds is different now
    assert executor.run(workflow).outputs["1"] == {"text": ["1:4"]}


def test_prepare_reports_bad_input_without_raising(executor):
    for bad, kind in (([1, 2], "invalid_prompt"), ({"1": {"inputs": {}}}, "invalid_prompt"),
                      ({"1": {"class_type": "Nope"}}, "missing_node_type")):
        prompt = executor.prepare(bad)
        assert not prompt.ok and prompt.error["type"] == kind and prompt.plan == []


def test_prepared_prompt_plans_only_what_outputs_need(executor):
    prompt = executor.prepare({"1": {"class_type": "Number", "inputs": {"value": 1}},
                               "2": {"class_type": "Number", "inputs": {"value": 2}},
                               "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}}})
    assert prompt.ok and prompt.plan == ["1", "3"] and prompt.outputs == ["3"]


def test_invalid_prompt_ends_with_an_error_event_and_the_close(executor, recorder):
    result = executor.execute(executor.prepare({"1": {"class_type": "Even", "inputs": {"value": 3}},
                                                "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}),
                              listener=recorder)
    assert result.status == "invalid"
    assert recorder.names() == ["execution_error", "executing"]
    error = recorder.of("execution_error")[0]
    assert "1" in error["node_errors"] and "must be even" in str(error["node_errors"])


def test_the_result_is_recorded_before_the_end_is_announced(executor, recorder):
    order: list[str] = []

    def record(result: RunResult) -> None:
        assert result.ok and result.messages[-1][0] == "execution_success"
        order.append("recorded")

    def listener(event: str, data: dict) -> None:
        if event == "executing" and data["node"] is None:
            order.append("closed")

    executor.execute(executor.prepare(two_ids()), listener=listener, record=record)
    assert order == ["recorded", "closed"]


def test_a_failing_recorder_turns_the_run_into_an_error_and_records_that(executor, recorder):
    recorded: list[RunResult] = []

    def record(result: RunResult) -> None:
        recorded.append(result)
        if len(recorded) == 1:
            raise OSError(28, "No space left on device")

    result = executor.execute(executor.prepare(two_ids()), listener=recorder, record=record)
    assert result.status == "error"
    assert "could not be recorded" in result.error["exception_message"]
    assert [r.status for r in recorded] == ["success", "error"]
    assert recorder.names()[-3:] == ["execution_success", "execution_error", "executing"]


def test_a_recorder_that_always_fails_still_ends_the_run(executor, recorder):
    def record(result: RunResult) -> None:
        raise OSError(28, "No space left on device")

    result = executor.execute(executor.prepare(two_ids()), listener=recorder, record=record)
    assert result.status == "error" and recorder.names()[-1] == "executing"


def test_an_output_node_may_return_an_empty_dict(executor):
    result = executor.run({"1": {"class_type": "Number", "inputs": {"value": 4}},
                           "2": {"class_type": "ComfyQuiet", "inputs": {"x": ["1", 0]}}})
    assert result.ok, result.error
    assert CALLS["ComfyQuiet"] == 1 and result.outputs == {}


def test_an_interrupt_sent_before_the_run_starts_stops_it(executor, recorder):
    executor.interrupt()  # between a worker taking the prompt and the run starting
    result = executor.run(two_ids(), listener=recorder)
    assert result.status == "interrupted"
    assert executor.run(two_ids()).ok  # and it is spent: the next run is not interrupted


@pytest.mark.parametrize("layout", [None, {"nodes": [], "links": []}])
def test_a_workflow_files_layout_reaches_nodes_as_png_info(executor, layout):
    api = {"1": {"class_type": "ComfyRange", "inputs": {"count": 2}},
           "2": {"class_type": "ComfyCollect", "inputs": {"values": ["1", 0], "sep": "+"}}}
    workflow = parse_workflow({"prompt": api, "workflow": layout} if layout else api)
    seen: list = []
    collect = toy_nodes.ComfyCollect.collect

    def spy(self, values, sep, prompt=None, unique_id=None, extra_pnginfo=None):
        seen.append(extra_pnginfo[0])
        return collect(self, values, sep, prompt, unique_id, extra_pnginfo)

    toy_nodes.ComfyCollect.collect = spy
    try:
        assert executor.run(workflow).ok
    finally:
        toy_nodes.ComfyCollect.collect = collect
    assert seen == [{"workflow": layout} if layout else None]
