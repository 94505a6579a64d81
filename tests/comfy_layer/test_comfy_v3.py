"""ComfyUI V3 nodes (comfy_api.latest) load, describe themselves as ComfyUI does, and run through sdgraph."""
from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "v3_object_info.json"


def test_object_info_of_v3_nodes_equals_comfyuis(v3) -> None:
    reference = json.loads(DATA.read_text())["nodes"]
    ours = json.loads(json.dumps(v3.registry.describe(v3.dirs)))
    assert sorted(reference) == sorted(v3.registry.packs["custom_nodes/v3_toy"])
    for name, entry in reference.items():
        assert ours[name] == entry, name


def test_an_entrypoint_pack_and_a_mappings_pack_both_load(v3) -> None:
    assert len(v3.registry.packs["custom_nodes/v3_toy"]) == 14  # by comfy_entrypoint
    assert sorted(v3.registry.packs["custom_nodes/v3_dynamic"]) == ["ToyPass", "ToyPick", "ToySolid", "ToySum", "ToyText"]
    spec = v3.registry.get("ToyMix").spec
    assert spec.not_idempotent and spec.inputs_by_name["hidden:prompt"].hidden_kind == "PROMPT"
    assert spec.inputs_by_name["either"].type == "IMAGE,MASK"


def test_expansion_async_execute_hidden_values_and_ui_text(v3) -> None:
    result, _ = v3.run({"1": {"class_type": "ToyNumber", "inputs": {"value": 5}},
                        "2": {"class_type": "ToyTimes", "inputs": {"value": ["1", 0], "count": 4}},
                        "3": {"class_type": "ToyAsyncDouble", "inputs": {"value": ["2", 0]}},
                        "4": {"class_type": "ToyShow", "inputs": {"value": ["3", 0]}}})
    assert result.ok, result.error
    assert result.outputs["4"] == {"text": ["40 at 4 (4 nodes)"]}  # 5*4*2; unique_id and the prompt
    assert len([n for n in result.executed if n.startswith("2.")]) == 4  # the ToyAdd chain it expanded to


def test_an_expansion_from_a_node_without_enable_expand_is_an_error_naming_it(v3) -> None:
    result, _ = v3.run({"1": {"class_type": "ToyNumber", "inputs": {"value": 5}},
                        "2": {"class_type": "ToyUnexpandable", "inputs": {"value": ["1", 0], "count": 2}},
                        "3": {"class_type": "ToyShow", "inputs": {"value": ["2", 0]}}})
    assert not result.ok
    assert "enable_expand" in json.dumps(result.error) and "ToyUnexpandable" in json.dumps(result.error)


def test_lazy_inputs_evaluate_only_the_branch_asked_for(v3) -> None:
    calls = v3.pack("v3_toy").CALLS
    calls.clear()
    result, _ = v3.run({"1": {"class_type": "ToyNumber", "inputs": {"value": 1}},
                        "2": {"class_type": "ToyNumber", "inputs": {"value": 2}},
                        "3": {"class_type": "ToySwitch", "inputs": {"switch": False, "on_true": ["1", 0],
                                                                    "on_false": ["2", 0]}},
                        "4": {"class_type": "ToyShow", "inputs": {"value": ["3", 0]}}})
    assert result.ok, result.error
    assert result.outputs["4"]["text"][0].startswith("2 at")
    assert ("ToyNumber", 2) in calls and ("ToyNumber", 1) not in calls


def test_block_execution_stops_the_branch_and_reports_its_message(v3) -> None:
    prompt = {"1": {"class_type": "ToyNumber", "inputs": {"value": 3}},
              "2": {"class_type": "ToyGate", "inputs": {"value": ["1", 0], "open": False, "why": "closed here"}},
              "3": {"class_type": "ToyShow", "inputs": {"value": ["2", 0]}},
              "4": {"class_type": "ToyShow", "inputs": {"value": ["1", 0]}}}
    result, events = v3.run(prompt)
    assert "3" not in result.outputs and result.outputs["4"]["text"][0].startswith("3 at")
    errors = [data for name, data in events if name == "execution_error"]
    assert [e["exception_message"] for e in errors] == ["Execution Blocked: closed here"]
    prompt["2"]["inputs"]["why"] = ""  # no message: the branch stops silently
    result, events = v3.run(prompt)
    assert result.ok and "3" not in result.outputs
    assert not [name for name, _ in events if name == "execution_error"]


def test_validate_inputs_errors_name_the_node_and_the_input(v3) -> None:
    result, _ = v3.run({"7": {"class_type": "ToyCheck", "inputs": {"value": 3, "mode": "plain"}}})
    assert result.status == "invalid"
    (error,) = result.node_errors["7"]["errors"]
    assert error["type"] == "custom_validation_failed"
    assert error["details"] == "value - value must be even, got 3"
    assert error["extra_info"]["input_name"] == "value"
    # validate_inputs takes `value`: the built-in range check is left to it (max 10), as in ComfyUI
    result, _ = v3.run({"7": {"class_type": "ToyCheck", "inputs": {"value": 12, "mode": "loud"}},
                        "8": {"class_type": "ToyShow", "inputs": {"value": ["7", 0]}}})
    assert result.ok, result.node_errors
    assert result.outputs["8"]["text"][0].startswith("12! at")
    result, _ = v3.run({"7": {"class_type": "ToyCheck", "inputs": {"value": 2, "mode": "quiet"}}})
    assert result.node_errors["7"]["errors"][0]["type"] == "value_not_in_list"


def test_a_list_output_maps_the_next_node_over_its_items(v3) -> None:
    result, _ = v3.run({"1": {"class_type": "ToyRange", "inputs": {"count": 3}},
                        "2": {"class_type": "ToyAsyncDouble", "inputs": {"value": ["1", 0]}},
                        "3": {"class_type": "ToyShow", "inputs": {"value": ["2", 0]}},
                        "4": {"class_type": "ToyShow", "inputs": {"value": ["1", 1]}}})
    assert result.ok, result.error
    assert [text.split(" at")[0] for text in result.outputs["3"]["text"]] == ["0", "2", "4"]
    assert [text.split(" at")[0] for text in result.outputs["4"]["text"]] == ["3"]


def test_fingerprint_inputs_reruns_the_node_when_it_changes(v3) -> None:
    pack = v3.pack("v3_toy")
    pack.CALLS.clear()
    prompt = {"1": {"class_type": "ToyStamp", "inputs": {"text": "abc"}},
              "2": {"class_type": "ToyShow", "inputs": {"value": ["1", 0]}}}
    for _ in range(2):
        result, _ = v3.run(prompt)
    assert [c for c in pack.CALLS if c[0] == "ToyStamp"] == [("ToyStamp", "abc")]  # the second run is cached
    pack.FINGERPRINT[0] = "b"
    result, _ = v3.run(prompt)
    assert result.outputs["2"]["text"][0].startswith("[3, 'b']")
    assert len([c for c in pack.CALLS if c[0] == "ToyStamp"]) == 2


def test_an_input_named_prompt_is_not_taken_for_the_hidden_prompt(v3) -> None:
    result, _ = v3.run({"1": {"class_type": "ToySave", "inputs": {"prompt": "a cat"}}})
    assert result.ok, (result.error, result.node_errors)
    assert result.outputs["1"] == {"text": ["a cat", "the prompt has 1 node(s)"]}
