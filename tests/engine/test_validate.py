"""Validation reports every problem at once, per node, in the ecosystem's shape."""
from __future__ import annotations

import pytest


def errors_of(report, node_id):
    return [e["type"] for e in report.node_errors[node_id]["errors"]]


def base() -> dict:
    return {
        "1": {"class_type": "Number", "inputs": {"value": 2}},
        "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": 2.0, "mode": "round"}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }


def test_valid_workflow(executor):
    report = executor.prepare(base())
    assert report.ok and report.outputs == ["3"] and report.node_errors == {}


@pytest.mark.parametrize("node, inputs, expected", [
    ("2", {"x": ["1", 0], "mode": "round"}, "required_input_missing"),
    ("2", {"x": ["1", 0], "factor": "big", "mode": "round"}, "invalid_input_type"),
    ("2", {"x": ["1", 0], "factor": -1, "mode": "round"}, "value_smaller_than_min"),
    ("2", {"x": ["1", 0], "factor": 11, "mode": "round"}, "value_bigger_than_max"),
    ("2", {"x": ["1", 0], "factor": 1, "mode": "ceil"}, "value_not_in_list"),
    ("2", {"x": ["1", 1], "factor": 1, "mode": "round"}, "bad_linked_input"),
    ("2", {"x": ["9", 0], "factor": 1, "mode": "round"}, "bad_linked_input"),
])
def test_each_input_error_type(executor, node, inputs, expected):
    workflow = base()
    workflow[node]["inputs"] = inputs
    report = executor.prepare(workflow)
    assert not report.ok
    assert report.error["type"] == "prompt_outputs_failed_validation"
    assert errors_of(report, node) == [expected]
    entry = report.node_errors[node]
    assert entry["class_type"] == "Scale" and entry["dependent_outputs"] == ["3"]
    error = entry["errors"][0]
    assert set(error) == {"type", "message", "details", "extra_info"}
    if expected != "required_input_missing":
        assert error["extra_info"]["input_name"] in inputs


def test_return_type_mismatch(executor):
    workflow = base()
    workflow["4"] = {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["1", 0]}}  # FLOAT into INT
    workflow["5"] = {"class_type": "Show", "inputs": {"value": ["4", 0]}}
    report = executor.prepare(workflow)
    assert errors_of(report, "4") == ["return_type_mismatch"]
    assert report.node_errors["4"]["errors"][0]["extra_info"]["received_type"] == "FLOAT"
    # the independent output still runs
    assert report.ok and report.outputs == ["3"]
    result = executor.run(workflow)
    assert result.ok and set(result.outputs) == {"3"}


def test_custom_validation(executor):
    workflow = {"1": {"class_type": "Even", "inputs": {"value": 3}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    report = executor.prepare(workflow)
    assert errors_of(report, "1") == ["custom_validation_failed"]
    assert "must be even" in report.node_errors["1"]["errors"][0]["details"]


def test_coercion_of_literals(executor):
    workflow = base()
    workflow["1"]["inputs"]["value"] = "7"
    workflow["2"]["inputs"]["factor"] = "0.5"
    report = executor.prepare(workflow)
    assert report.ok
    assert report.nodes["1"].literals["value"] == 7 and report.nodes["2"].literals["factor"] == 0.5
    assert executor.run(workflow).outputs["3"] == {"text": ["3.5"]}


def test_every_problem_reported_at_once(executor):
    workflow = base()
    workflow["1"]["inputs"]["value"] = 1000
    workflow["2"]["inputs"]["mode"] = "nope"
    report = executor.prepare(workflow)
    assert set(report.node_errors) == {"1", "2"}


def test_unknown_class_type(executor):
    workflow = base()
    workflow["9"] = {"class_type": "NoSuchNode", "inputs": {}}
    report = executor.prepare(workflow)
    assert report.error["type"] == "missing_node_type"
    assert "NoSuchNode" in report.error["message"]
    assert errors_of(report, "9") == ["missing_node_type"]
    assert executor.run(workflow).status == "invalid"


def test_no_output_node(executor):
    report = executor.prepare({"1": {"class_type": "Number", "inputs": {"value": 1}}})
    assert report.error["type"] == "prompt_no_outputs"


def test_dependency_cycle(executor):
    workflow = {
        "1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": ["2", 0]}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    report = executor.prepare(workflow)
    assert not report.ok and report.error["type"] == "prompt_outputs_failed_validation"
    assert "dependency_cycle" in errors_of(report, "1") and "dependency_cycle" in errors_of(report, "2")
    assert report.node_errors["1"]["dependent_outputs"] == ["3"]


def test_self_loop(executor):
    workflow = {"1": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
                "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    assert "dependency_cycle" in errors_of(executor.prepare(workflow), "1")


def test_aliases_answer_to_the_same_node(executor):
    workflow = {"1": {"class_type": "Number", "inputs": {"value": 1}},
                "2": {"class_type": "Plus", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
                "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}
    assert executor.run(workflow).outputs["3"] == {"text": ["2"]}


def test_a_bare_list_on_a_socket_is_refused(executor):
    workflow = {"1": {"class_type": "Show", "inputs": {"value": [1, 2, 3]}}}
    report = executor.prepare(workflow)
    assert errors_of(report, "1") == ["invalid_input_type"]  # a value for a socket must be wrapped


def test_deep_chain_has_no_recursion_limit(executor):
    workflow = {"0": {"class_type": "Number", "inputs": {"value": 1}}}
    for i in range(1, 5000):
        workflow[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": ["0", 0]}}
    workflow["out"] = {"class_type": "Show", "inputs": {"value": ["4999", 0]}}
    assert executor.run(workflow).outputs["out"] == {"text": ["5000"]}
