"""Subgraphs (`definitions.subgraphs`) and old group nodes (`extra.groupNodes`) flattened to `outer:inner` ids."""
from __future__ import annotations

from sdgraph.uiformat import convert, ui_to_api
from tests.uiformat.builders import ckpt, encode, graph, node

ENCODE_ID = "a1b2c3d4-0000-4000-8000-000000000001"
WRAP_ID = "a1b2c3d4-0000-4000-8000-000000000002"


def link(link_id, src, src_slot, dst, dst_slot, kind="*"):
    return {"id": link_id, "origin_id": src, "origin_slot": src_slot, "target_id": dst, "target_slot": dst_slot,
            "type": kind}


def encode_subgraph() -> dict:
    """clip (socket) and text (widget) in, CONDITIONING out; inside: CLIPTextEncode #3 with title Inner."""
    inner = encode(3, "inner default", 1, title="Inner")
    inner["inputs"].append({"name": "text", "type": "STRING", "link": 2, "widget": {"name": "text"}})
    return {"id": ENCODE_ID, "name": "Encode", "nodes": [inner],
            "inputs": [{"name": "clip", "type": "CLIP"}, {"name": "text", "type": "STRING"}],
            "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING"}],
            "links": [link(1, -10, 0, 3, 0, "CLIP"), link(2, -10, 1, 3, 1, "STRING"),
                      link(3, 3, 0, -20, 0, "CONDITIONING")]}


def instance(node_id, kind, clip_link, text_link=None, values=None, **extra):
    return node(node_id, kind, values, inputs=[("clip", "CLIP", clip_link), ("text", "STRING", text_link, "text")],
                outputs=["CONDITIONING"], **extra)


def consumer(link_id: int) -> dict:
    return node(8, "ConditioningZeroOut", [], inputs=[("conditioning", "CONDITIONING", link_id)],
                outputs=["CONDITIONING"])


def test_subgraph_is_flattened_with_outer_inner_ids_and_exposed_widget_values():
    wf = graph([ckpt(), instance(12, ENCODE_ID, 1, values=["from outside"], title="My encoder"), consumer(2)],
               [[1, 4, 1, 12, 0, "CLIP"], [2, 12, 0, 8, 0, "CONDITIONING"]],
               definitions={"subgraphs": [encode_subgraph()]})
    prompt = ui_to_api(wf)
    assert set(prompt) == {"4", "12:3", "8"}
    assert prompt["12:3"] == {"inputs": {"text": "from outside", "clip": ["4", 1]}, "class_type": "CLIPTextEncode",
                              "_meta": {"title": "Inner"}}
    assert prompt["8"]["inputs"] == {"conditioning": ["12:3", 0]}


def test_subgraph_input_linked_outside_feeds_the_inner_widget():
    prim = node(9, "PrimitiveNode", ["from a primitive"], outputs=["STRING"])
    wf = graph([ckpt(), prim, instance(12, ENCODE_ID, 1, text_link=3, values=["unused"]), consumer(2)],
               [[1, 4, 1, 12, 0, "CLIP"], [3, 9, 0, 12, 1, "STRING"], [2, 12, 0, 8, 0, "CONDITIONING"]],
               definitions={"subgraphs": [encode_subgraph()]})
    assert ui_to_api(wf)["12:3"]["inputs"]["text"] == "from a primitive"


def test_nested_subgraphs_get_nested_ids_and_paths():
    wrap = {"id": WRAP_ID, "name": "Wrap", "nodes": [instance(5, ENCODE_ID, 1, values=["nested"], title="Enc")],
            "inputs": [{"name": "clip", "type": "CLIP"}], "outputs": [{"name": "c", "type": "CONDITIONING"}],
            "links": [link(1, -10, 0, 5, 0, "CLIP"), link(2, 5, 0, -20, 0, "CONDITIONING")]}
    outer = node(12, WRAP_ID, [], inputs=[("clip", "CLIP", 1)], outputs=["CONDITIONING"], title="Outer")
    wf = graph([ckpt(), outer, consumer(2)], [[1, 4, 1, 12, 0, "CLIP"], [2, 12, 0, 8, 0, "CONDITIONING"]],
               definitions={"subgraphs": [encode_subgraph(), wrap]})
    result = convert(wf)
    assert result.prompt["12:5:3"]["inputs"] == {"text": "nested", "clip": ["4", 1]}
    assert result.prompt["8"]["inputs"] == {"conditioning": ["12:5:3", 0]}
    assert result.origin["12:5:3"] == {"ui_id": 3, "title": "Inner", "path": "Outer (#12) > Enc (#5)", "dropped": {}}


def test_problems_inside_a_subgraph_name_the_path():
    bad = {**encode_subgraph(), "nodes": [node(3, "NoSuchNode", [], title="Odd")]}
    result = convert(graph([instance(12, ENCODE_ID, None, title="Box")], [], definitions={"subgraphs": [bad]}))
    assert result.problems == [{"node_id": 3, "title": "Odd", "path": "Box (#12)",
                                "message": "unknown node type 'NoSuchNode'"}]


def test_bypassed_subgraph_passes_its_input_through_and_muted_one_drops_its_inner_nodes():
    cond = encode(6, "plain", 1)
    for mode, expected in ((4, {"conditioning": ["6", 0]}), (2, {})):
        sub = node(12, ENCODE_ID, ["x"], mode=mode, inputs=[("c", "CONDITIONING", 5)], outputs=["CONDITIONING"])
        wf = graph([ckpt(), cond, sub, consumer(2)],
                   [[1, 4, 1, 6, 0, "CLIP"], [5, 6, 0, 12, 0, "CONDITIONING"], [2, 12, 0, 8, 0, "CONDITIONING"]],
                   definitions={"subgraphs": [encode_subgraph()]})
        prompt = ui_to_api(wf)
        assert set(prompt) == {"4", "6", "8"}
        assert prompt["8"]["inputs"] == expected


def test_old_group_node_expands_with_outer_index_ids():
    group = {"nodes": [
        {"index": 0, "type": "CLIPTextEncode", "inputs": [{"name": "clip", "type": "CLIP", "link": None}],
         "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [1]}], "widgets_values": ["a"]},
        {"index": 1, "type": "ConditioningZeroOut",
         "inputs": [{"name": "conditioning", "type": "CONDITIONING", "link": 1}],
         "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": []}], "widgets_values": []}],
        "links": [[0, 0, 1, 0, 6, "CONDITIONING"]], "external": []}
    inst = node(15, "workflow>Encode+zero", ["a dog"], inputs=[("clip", "CLIP", 1)], outputs=["CONDITIONING"])
    wf = graph([ckpt(), inst, consumer(2)], [[1, 4, 1, 15, 0, "CLIP"], [2, 15, 0, 8, 0, "CONDITIONING"]],
               extra={"groupNodes": {"Encode+zero": group}})
    prompt = ui_to_api(wf)
    assert prompt["15:0"]["inputs"] == {"text": "a dog", "clip": ["4", 1]}
    assert prompt["15:1"]["inputs"] == {"conditioning": ["15:0", 0]}
    assert prompt["8"]["inputs"] == {"conditioning": ["15:1", 0]}


def test_instance_values_that_do_not_pair_with_its_widget_inputs_leave_the_inner_value():
    wf = graph([ckpt(), instance(12, ENCODE_ID, 1, values=["a", "b"]), consumer(2)],
               [[1, 4, 1, 12, 0, "CLIP"], [2, 12, 0, 8, 0, "CONDITIONING"]],
               definitions={"subgraphs": [encode_subgraph()]})
    assert ui_to_api(wf)["12:3"]["inputs"]["text"] == "inner default"
