"""Links through virtual, muted and bypassed nodes; link encodings; unknown types."""
from __future__ import annotations

import pytest

from sdgraph.uiformat import ConversionError, convert, ui_to_api
from tests.uiformat.builders import ckpt, encode, graph, node


def test_primitive_node_value_flows_to_every_target():
    prim = node(9, "PrimitiveNode", [77, "fixed"], outputs=["INT"])
    a = node(2, "EmptyLatentImage", [512, 512, 1], inputs=[("width", "INT", 1, "width")], outputs=["LATENT"])
    b = node(3, "EmptyLatentImage", [64, 64, 1], inputs=[("height", "INT", 2, "height")], outputs=["LATENT"])
    prompt = ui_to_api(graph([prim, a, b], [[1, 9, 0, 2, 0, "INT"], [2, 9, 0, 3, 0, "INT"]]))
    assert "9" not in prompt
    assert prompt["2"]["inputs"] == {"width": 77, "height": 512, "batch_size": 1}
    assert prompt["3"]["inputs"] == {"width": 64, "height": 77, "batch_size": 1}


def test_reroute_chains_and_reroutes_of_reroutes_are_followed():
    r1 = node(10, "Reroute", inputs=[("", "*", 1)], outputs=["*"])
    r2 = node(11, "Reroute", inputs=[("", "*", 2)], outputs=["*"])
    prompt = ui_to_api(graph([ckpt(), r1, r2, encode(6, "a cat", 3)],
                             [[1, 4, 1, 10, 0, "CLIP"], [2, 10, 0, 11, 0, "*"], [3, 11, 0, 6, 0, "CLIP"]]))
    assert set(prompt) == {"4", "6"}
    assert prompt["6"]["inputs"] == {"text": "a cat", "clip": ["4", 1]}


def test_primitive_through_a_reroute():
    prim = node(9, "PrimitiveNode", ["hello"], outputs=["STRING"])
    r1 = node(10, "Reroute", inputs=[("", "*", 1)], outputs=["*"])
    enc = node(6, "CLIPTextEncode", ["old"], inputs=[("clip", "CLIP", None), ("text", "STRING", 2, "text")])
    assert ui_to_api(graph([prim, r1, enc], [[1, 9, 0, 10, 0, "*"], [2, 10, 0, 6, 1, "STRING"]]))["6"]["inputs"] == {
        "text": "hello"}


def test_notes_are_ignored():
    notes = [node(20, "Note", ["remember"]), node(21, "MarkdownNote", ["# hi"])]
    assert ui_to_api(graph([ckpt(), *notes], [])) == ui_to_api(graph([ckpt()], []))


def test_muted_node_is_removed_and_its_dependents_are_reported():
    muted = {**ckpt(), "mode": 2, "title": "Base model"}
    result = convert(graph([muted, encode(6, "a cat", 1, title="Positive")], [[1, 4, 1, 6, 0, "CLIP"]]))
    assert set(result.prompt) == {"6"}
    assert result.prompt["6"]["inputs"] == {"text": "a cat"}
    assert result.problems == []
    (warning,) = result.warnings
    assert warning["node_id"] == 6 and warning["title"] == "Positive"
    assert "muted node Base model (#4)" in warning["message"]
    assert "muted node Base model (#4)" in result.origin["6"]["dropped"]["clip"]


def test_bypassed_node_passes_on_the_input_of_the_matching_type():
    lora = node(5, "LoraLoader", ["x.safetensors", 1.0, 1.0], mode=4,
                inputs=[("model", "MODEL", 1), ("clip", "CLIP", 2)], outputs=["MODEL", "CLIP"])
    links = [[1, 4, 0, 5, 0, "MODEL"], [2, 4, 1, 5, 1, "CLIP"], [3, 5, 1, 6, 0, "CLIP"]]
    prompt = ui_to_api(graph([ckpt(), lora, encode(6, "a cat", 3)], links))
    assert "5" not in prompt
    assert prompt["6"]["inputs"]["clip"] == ["4", 1]  # output 1 (CLIP) takes input 1, not input 0 (MODEL)


def test_bypass_prefers_the_input_in_the_same_slot_among_several_of_the_type():
    pair = node(5, "ImageBatch", [], mode=4, inputs=[("image1", "IMAGE", 1), ("image2", "IMAGE", 2)],
                outputs=["IMAGE", "IMAGE"])
    first = node(7, "LoadImage", ["a.png"], outputs=["IMAGE", "MASK"])
    second = node(9, "LoadImage", ["b.png"], outputs=["IMAGE", "MASK"])
    save = node(8, "SaveImage", ["out"], inputs=[("images", "IMAGE", 3)])
    links = [[1, 7, 0, 5, 0, "IMAGE"], [2, 9, 0, 5, 1, "IMAGE"], [3, 5, 1, 8, 0, "IMAGE"]]
    assert ui_to_api(graph([first, second, pair, save], links))["8"]["inputs"]["images"] == ["9", 0]


def test_bypass_falls_back_to_the_first_input_of_that_type():
    cut = node(5, "JoinImageWithAlpha", [], mode=4,
               inputs=[("alpha", "MASK", 3), ("image", "IMAGE", 1)], outputs=["IMAGE"])
    save = node(8, "SaveImage", ["out"], inputs=[("images", "IMAGE", 2)])
    load = node(7, "LoadImage", ["a.png", "image"], outputs=["IMAGE", "MASK"])
    links = [[1, 7, 0, 5, 1, "IMAGE"], [3, 7, 1, 5, 0, "MASK"], [2, 5, 0, 8, 0, "IMAGE"]]
    prompt = ui_to_api(graph([load, cut, save], links))
    assert set(prompt) == {"7", "8"}
    assert prompt["8"]["inputs"] == {"filename_prefix": "out", "images": ["7", 0]}


def test_bypass_without_an_input_of_that_type_leaves_the_input_unset():
    decode = node(5, "VAEDecode", [], mode=4, inputs=[("samples", "LATENT", 1)], outputs=["IMAGE"])
    save = node(8, "SaveImage", ["out"], inputs=[("images", "IMAGE", 2)])
    latent = node(3, "EmptyLatentImage", [64, 64, 1], outputs=["LATENT"])
    prompt = ui_to_api(graph([latent, decode, save], [[1, 3, 0, 5, 0, "LATENT"], [2, 5, 0, 8, 0, "IMAGE"]]))
    assert prompt["8"]["inputs"] == {"filename_prefix": "out"}


def test_object_links_equal_array_links():
    arrays = graph([ckpt(), encode(6, "a cat", 1)], [[1, 4, 1, 6, 0, "CLIP"]])
    objects = graph([ckpt(), encode(6, "a cat", 1)], [
        {"id": 1, "origin_id": 4, "origin_slot": 1, "target_id": 6, "target_slot": 0, "type": "CLIP"}])
    assert ui_to_api(objects) == ui_to_api(arrays)
    assert ui_to_api(objects)["6"]["inputs"]["clip"] == ["4", 1]


def test_unknown_types_are_reported_by_name_with_the_pack_hint_not_raised_as_crashes():
    odd = node(12, "FancyUpscaler", [2], outputs=["IMAGE"], title="Upscale!",
               properties={"cnr_id": "fancy-pack"})
    with pytest.raises(ConversionError) as info:
        ui_to_api(graph([ckpt(), odd], []))
    (problem,) = info.value.problems
    assert problem == {"node_id": 12, "title": "Upscale!", "path": "",
                       "message": "unknown node type 'FancyUpscaler' (from the node pack 'fancy-pack'; install it)"}
    assert "node 12 'Upscale!'" in str(info.value)


def test_link_from_a_node_that_is_not_there_is_dropped():
    prompt = ui_to_api(graph([encode(6, "a cat", 1)], [[1, 99, 0, 6, 0, "CLIP"]]))
    assert prompt["6"]["inputs"] == {"text": "a cat"}


def test_an_unknown_core_node_says_so():
    newer = node(3, "ComfyFutureNode", [1], properties={"cnr_id": "comfy-core"})
    with pytest.raises(ConversionError, match="'ComfyFutureNode' \\(a ComfyUI core node newer than sdgraph knows\\)"):
        ui_to_api(graph([newer], []))
