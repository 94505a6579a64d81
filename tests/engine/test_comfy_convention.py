"""ComfyUI-convention node classes run unchanged: list outputs, optional and hidden inputs, IS_CHANGED."""
from __future__ import annotations

from tests.engine.toy_nodes import CALLS, OUTSIDE_STATE


def test_list_output_maps_downstream_and_input_is_list_collects(executor):
    workflow = {
        "1": {"class_type": "ComfyRange", "inputs": {"count": 4}},
        "2": {"class_type": "ComfyDouble", "inputs": {"x": ["1", 0], "offset": 1}},
        "3": {"class_type": "ComfyCollect", "inputs": {"values": ["2", 0], "sep": "+"}},
    }
    result = executor.run(workflow)
    assert result.ok, result.error
    assert result.outputs["3"] == {"text": ["1+3+5+7"], "id": ["3"]}
    assert CALLS["ComfyDouble"] == 4 and CALLS["ComfyCollect"] == 1


def test_optional_input_may_be_left_out(executor):
    workflow = {
        "1": {"class_type": "Number", "inputs": {"value": 5}},
        "2": {"class_type": "ComfyDouble", "inputs": {"x": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    assert executor.run(workflow).outputs["3"] == {"text": ["10"]}


def test_validate_inputs_and_is_changed(executor):
    workflow = {"1": {"class_type": "ComfyChoice", "inputs": {"pick": "b", "n": 3}},
                "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    report = executor.prepare(workflow)
    assert report.node_errors["1"]["errors"][0]["type"] == "custom_validation_failed"
    workflow["1"]["inputs"]["n"] = 2
    assert executor.run(workflow).outputs["2"] == {"text": ["bb"]}
    assert executor.run(workflow).executed == []
    OUTSIDE_STATE["version"] = 7
    assert executor.run(workflow).executed == ["1", "2"]


def test_validate_inputs_takes_over_range_checks(executor):
    workflow = {"1": {"class_type": "ComfyChoice", "inputs": {"pick": "b", "n": 50}},
                "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    assert executor.prepare(workflow).ok  # n is VALIDATE_INPUTS' business, as in ComfyUI


def test_combo_checks_still_apply(executor):
    workflow = {"1": {"class_type": "ComfyChoice", "inputs": {"pick": "z", "n": 1}},
                "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    errors = executor.prepare(workflow).node_errors["1"]["errors"]
    assert [e["type"] for e in errors] == ["value_not_in_list"]
