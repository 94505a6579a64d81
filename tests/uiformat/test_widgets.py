"""Widget values mapped to inputs by the class's widget order."""
from __future__ import annotations

from sdgraph.uiformat import ui_to_api
from sdgraph.uiformat.widgets import core_table
from tests.uiformat.builders import ckpt, graph, node

SAMPLER_VALUES = [5, "randomize", 20, 7.0, "euler", "normal", 1.0]
SAMPLER_INPUTS = {"seed": 5, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}


def sampler(values, inputs=None) -> dict:
    return node(3, "KSampler", values, inputs=inputs or [("model", "MODEL", 1)], outputs=["LATENT"])


def test_widget_values_follow_widget_order_and_skip_the_seed_control_value():
    prompt = ui_to_api(graph([ckpt(), sampler(SAMPLER_VALUES)], [[1, 4, 0, 3, 0, "MODEL"]]))
    assert prompt["3"]["inputs"] == {**SAMPLER_INPUTS, "model": ["4", 0]}
    assert prompt["4"]["inputs"] == {"ckpt_name": "m.safetensors"}
    assert prompt["3"]["class_type"] == "KSampler"


def test_noise_seed_control_value_is_skipped_too():
    values = ["enable", 9, "fixed", 30, 6.5, "euler", "karras", 0, 30, "disable"]
    prompt = ui_to_api(graph([node(2, "KSamplerAdvanced", values, outputs=["LATENT"])], []))
    assert prompt["2"]["inputs"] == {"add_noise": "enable", "noise_seed": 9, "steps": 30, "cfg": 6.5,
                                     "sampler_name": "euler", "scheduler": "karras", "start_at_step": 0,
                                     "end_at_step": 30, "return_with_leftover_noise": "disable"}


def test_a_seed_without_a_stored_control_value_still_maps():
    prompt = ui_to_api(graph([sampler([5, 20, 7.0, "euler", "normal", 1.0])], []))
    assert prompt["3"]["inputs"] == SAMPLER_INPUTS


def test_widgets_values_as_a_dict_by_name():
    values = {**SAMPLER_INPUTS, "control_after_generate": "fixed"}
    prompt = ui_to_api(graph([sampler(values)], []))
    assert prompt["3"]["inputs"] == SAMPLER_INPUTS


def test_the_upload_button_value_is_not_taken_for_the_next_widget():
    prompt = ui_to_api(graph([node(5, "LoadImageMask", ["cat.png", "image", "red"], outputs=["MASK"])], []))
    assert prompt["5"]["inputs"] == {"image": "cat.png", "channel": "red"}


def test_widget_converted_to_input_takes_the_link_and_an_unlinked_one_keeps_its_value():
    inputs = [("model", "MODEL", 1), ("seed", "INT", 2, "seed"), ("steps", "INT", None, "steps")]
    seed = node(7, "PrimitiveInt", [123, "fixed"], outputs=["INT"])
    prompt = ui_to_api(graph([ckpt(), seed, sampler(SAMPLER_VALUES, inputs)],
                             [[1, 4, 0, 3, 0, "MODEL"], [2, 7, 0, 3, 1, "INT"]]))
    assert prompt["3"]["inputs"]["seed"] == ["7", 0]
    assert prompt["3"]["inputs"]["steps"] == 20
    assert prompt["7"]["inputs"] == {"value": 123}


def test_title_becomes_meta_title():
    prompt = ui_to_api(graph([{**ckpt(), "title": "My model"}], []))
    assert prompt["4"]["_meta"] == {"title": "My model"}


def test_core_table_holds_only_widgets_in_order_with_flags():
    table = core_table()
    assert [w.name for w in table["KSampler"]] == list(SAMPLER_INPUTS)
    assert table["KSampler"][0].control and not table["KSampler"][1].control
    assert table["LoadImage"][0].upload
    assert "clip" not in {w.name for w in table["CLIPTextEncode"]}


def test_the_oldest_boolean_seed_toggle_is_skipped_too():
    prompt = ui_to_api(graph([sampler([5, True, 20, 7.0, "euler", "normal", 1.0])], []))
    assert prompt["3"]["inputs"] == SAMPLER_INPUTS
