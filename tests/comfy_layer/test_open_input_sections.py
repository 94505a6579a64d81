"""Compatibility gaps the five-pack workflow (tools/pack_workflow.py) found, each with a toy pack written here.

- INPUT_TYPES sections that claim every name (a dict whose `in` always says yes, as rgthree's Any Switch and
  VideoHelperSuite's hidden section use): ComfyUI passes the prompt's undeclared inputs to the function, a
  link's value of any type and a literal as it is, and the linked nodes run;
- `comfy.model_management.intermediate_dtype()` (the newer ComfyUI API KJNodes' image nodes call).
"""
from __future__ import annotations

import sys

import pytest

from sdgraph.cache import OutputCache
from sdgraph.context import Services
from sdgraph.execute import Executor
from tests.comfy_layer.conftest import load_pack

PACK = '''
import torch
import comfy.model_management as mm


class Flexible(dict):
    """Declares `start` and claims any other name, of the type "*"."""
    def __contains__(self, key):
        return True
    def __getitem__(self, key):
        return super().get(key, ("*",))


class Everything(dict):
    def __contains__(self, key):
        return True


class Value:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    CATEGORY = "test"
    CALLS = []

    def go(self, value):
        Value.CALLS.append(value)
        return (value,)


class Nothing:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    CATEGORY = "test"

    def go(self):
        return (None,)


class FirstGiven:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": Flexible({"start": ("INT", {"default": 0})})}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "go"
    CATEGORY = "test"
    OUTPUT_NODE = True

    def go(self, **kwargs):
        names = sorted(kwargs)
        first = next((kwargs[n] for n in names if n.startswith("any_") and kwargs[n] is not None), None)
        return {"ui": {"names": names, "first": [first]}, "result": (str(first),)}


class HiddenWidgets:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"default": 1})},
                "hidden": Everything({"unique_id": "UNIQUE_ID"})}
    RETURN_TYPES = ()
    FUNCTION = "go"
    CATEGORY = "test"
    OUTPUT_NODE = True

    def go(self, x, unique_id=None, **widgets):
        return {"ui": {"widgets": [widgets], "id": [unique_id]}}


class Intermediate:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}
    RETURN_TYPES = ()
    FUNCTION = "go"
    CATEGORY = "test"
    OUTPUT_NODE = True

    def go(self):
        made = torch.zeros(2, dtype=mm.intermediate_dtype(), device=mm.intermediate_device())
        return {"ui": {"dtype": [str(made.dtype)]}}


class ExpandToSwitch:
    """Expands into a FirstGiven fed through undeclared inputs (a None first, then a value)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "go"
    CATEGORY = "test"

    def go(self, value):
        graph = {"n": {"class_type": "ToyNothing", "inputs": {}},
                 "v": {"class_type": "ToyValue", "inputs": {"value": value}},
                 "s": {"class_type": "ToyFirstGiven", "inputs": {"any_01": ["n", 0], "any_02": ["v", 0]}}}
        return {"result": (["s", 0],), "expand": graph}


class Show:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True})}}
    RETURN_TYPES = ()
    FUNCTION = "go"
    CATEGORY = "test"
    OUTPUT_NODE = True

    def go(self, text):
        return {"ui": {"text": [text]}}


NODE_CLASS_MAPPINGS = {"ToyValue": Value, "ToyNothing": Nothing, "ToyFirstGiven": FirstGiven,
                       "ToyHiddenWidgets": HiddenWidgets, "ToyIntermediate": Intermediate,
                       "ToyExpandToSwitch": ExpandToSwitch, "ToyShow": Show}
'''


@pytest.fixture
def toy(tmp_path):
    registry, dirs = load_pack(tmp_path, "toy_open_inputs", PACK)
    module = sys.modules["sdgraph_custom_nodes.toy_open_inputs"]
    module.Value.CALLS.clear()
    return Executor(registry, Services(dirs=dirs), OutputCache()), module


def test_undeclared_inputs_of_a_section_claiming_every_name_reach_the_function_and_their_nodes_run(toy):
    executor, module = toy
    result = executor.run({
        "1": {"class_type": "ToyNothing", "inputs": {}},
        "2": {"class_type": "ToyValue", "inputs": {"value": 7}},
        "3": {"class_type": "ToyFirstGiven", "inputs": {"any_01": ["1", 0], "any_02": ["2", 0], "note": "kept",
                                                         "start": 3}},
    })
    assert result.ok, result.error
    assert result.outputs["3"]["names"] == ["any_01", "any_02", "note", "start"]
    assert result.outputs["3"]["first"] == [7]  # any_01 was linked to a None: the switch took any_02
    assert module.Value.CALLS == [7]  # the node behind the undeclared link ran


def test_an_expanded_node_gets_its_undeclared_inputs_too(toy):
    executor, module = toy
    result = executor.run({"1": {"class_type": "ToyExpandToSwitch", "inputs": {"value": 4}},
                           "2": {"class_type": "ToyShow", "inputs": {"text": ["1", 0]}}})
    assert result.ok, result.error
    assert result.outputs["2"]["text"] == ["4"]
    assert module.Value.CALLS == [4]


def test_undeclared_literals_of_a_hidden_section_claiming_every_name_are_passed_as_they_are(toy):
    executor, _ = toy
    result = executor.run({"1": {"class_type": "ToyHiddenWidgets",
                                 "inputs": {"x": 2, "pix_fmt": "rgba64le", "gop_size": 1}}})
    assert result.ok, result.error
    assert result.outputs["1"]["widgets"] == [{"pix_fmt": "rgba64le", "gop_size": 1}]
    assert result.outputs["1"]["id"] == ["1"]


def test_undeclared_link_to_a_missing_node_is_a_clear_error(toy):
    executor, _ = toy
    result = executor.run({"3": {"class_type": "ToyFirstGiven", "inputs": {"any_01": ["9", 0]}}})
    assert result.status == "invalid"
    assert "any_01" in str(result.node_errors["3"])


def test_inputs_of_a_plain_dict_section_stay_declared_only(toy):
    executor, _ = toy
    result = executor.run({"1": {"class_type": "ToyValue", "inputs": {"value": 1, "stray": 5}},
                           "2": {"class_type": "ToyFirstGiven", "inputs": {"any_01": ["1", 0]}}})
    assert result.ok, result.error
    assert result.outputs["2"]["first"] == [1]


def test_intermediate_dtype_is_the_float32_of_images_and_latents(toy):
    executor, _ = toy
    result = executor.run({"1": {"class_type": "ToyIntermediate", "inputs": {}}})
    assert result.ok, result.error
    assert result.outputs["1"]["dtype"] == ["torch.float32"]
