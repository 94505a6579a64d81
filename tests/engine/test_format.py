"""Workflow JSON, the /object_info description, and the exported JSON Schema."""
from __future__ import annotations

import json

import pytest

from sdgraph.workflow import WorkflowFormatError, json_schema, parse_workflow


def test_envelope_keeps_layout_beside_the_prompt():
    api = {"1": {"class_type": "Number", "inputs": {"value": 1}, "_meta": {"title": "one"}}}
    layout = {"nodes": [{"id": 1, "pos": [0, 0]}], "groups": []}
    workflow = parse_workflow({"prompt": api, "workflow": layout})
    assert workflow.layout == layout and workflow.nodes["1"].title == "one"
    assert workflow.to_api() == api
    assert parse_workflow(workflow.to_file()).to_api() == api


@pytest.mark.parametrize("bad, where", [
    ([], "JSON object"),
    ({"1": {"inputs": {}}}, "node '1' field class_type"),
    ({"1": {"class_type": "X", "inputs": 5}}, "node '1' field inputs"),
])
def test_malformed_workflow_says_where(bad, where):
    with pytest.raises(WorkflowFormatError, match=where):
        parse_workflow(bad)


def test_json_schema_is_exported():
    schema = json_schema()
    json.dumps(schema)
    assert schema["type"] == "object"
    assert "PromptNode" in json.dumps(schema)


def test_object_info_shape(registry):
    info = registry.describe()
    scale = info["Scale"]
    assert scale["input"]["required"]["factor"] == ["FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01}]
    # as in ComfyUI's descriptions: a combo's implied default (its first choice) and an INT's step 1 are left out
    assert scale["input"]["required"]["mode"] == [["round", "floor"]]
    assert scale["input_order"] == {"required": ["x", "factor", "mode"]}
    assert scale["output"] == ["FLOAT"] and scale["output_is_list"] == [False] and scale["output_name"] == ["FLOAT"]
    assert info["Add"]["input"]["optional"] == {"bias": ["INT", {"default": 0}]}
    assert info["Plus"]["name"] == "Plus" and info["Plus"]["input"] == info["Add"]["input"]
    assert info["Show"]["output_node"] is True
    assert info["Number"]["description"] == "A constant integer."
    assert info["ComfyRange"]["display_name"] == "Range (list)"
    assert info["ComfyRange"]["output_is_list"] == [True]
    assert info["ComfyCollect"]["input"]["hidden"] == {"prompt": "PROMPT", "unique_id": "UNIQUE_ID",
                                                       "extra_pnginfo": "EXTRA_PNGINFO"}
    assert info["ComfyDouble"]["input"]["required"]["x"] == ["INT", {"forceInput": True}]
    assert {"name", "display_name", "description", "category", "output_node", "python_module"} <= set(scale)


def test_implied_defaults_are_used_but_not_described():
    """A combo's first choice and an empty text are what clients assume when a description names no default, so
    /object_info leaves them out (as ComfyUI does) while sdgraph still knows them; explicit ones are shown."""
    from sdgraph.node import Combo, Int, String

    assert Combo("m", ["a", "b"]).default == "a" and Combo("m", ["a", "b"]).describe() == [["a", "b"]]
    assert Combo("m", ["a", "b"], default="a").describe() == [["a", "b"], {"default": "a"}]
    assert String("t").default == "" and String("t", multiline=True).describe() == ["STRING", {"multiline": True}]
    assert String("t", "").describe() == ["STRING", {"default": ""}]
    assert Int("n", 3).describe() == ["INT", {"default": 3}] and Int("n", 3, step=1).describe()[1]["step"] == 1


def test_comfy_convention_combos_are_described_as_their_class_wrote_them(registry):
    """A ComfyUI-style `(["a", "b"],)` combo stays without a default in /object_info; validation still gets "a"."""
    node = registry.get("ComfyChoice")
    assert registry.describe()["ComfyChoice"]["input"]["required"]["pick"] == [["a", "b"]]
    assert node.spec.inputs_by_name["pick"].default == "a"


def test_the_api_prompt_is_written_back_as_given_with_or_without_meta():
    given = {"1": {"class_type": "A", "inputs": {"x": 1}},
             "2": {"class_type": "B", "inputs": {"y": ["1", 0]}, "_meta": {}},
             "3": {"class_type": "C", "inputs": {}, "_meta": {"title": "three"}}}
    assert parse_workflow(json.loads(json.dumps(given))).to_api() == given
