"""Gaps Impact Pack showed (tools/pack_report.py, /object_info beside ComfyUI's), each with a small pack written here:
latent_preview's TAESD names, and a V1 class described as ComfyUI describes it (the class name as display name
when the pack gives none, `custom_nodes.<folder>` as python_module, options the class wrote False kept, a combo
output as its list of values)."""
from __future__ import annotations

import sys

import pytest
import torch

from sdgraph.cache import OutputCache
from sdgraph.context import Services
from sdgraph.execute import Executor
from tests.comfy_layer.conftest import load_pack

PACK = '''
from latent_preview import TAESD, TAESDPreviewerImpl, Latent2RGBPreviewer


class HalfDecoder:
    """Stands for a TAESD: decode(latent) gives [B, 3, 2H, 2W] in -1..1."""
    def decode(self, latent):
        return latent[:, :3].repeat_interleave(2, -1).repeat_interleave(2, -2)


def preview(latent):
    return TAESDPreviewerImpl(HalfDecoder()).decode_latent_to_preview_image("JPEG", latent)


class PlainText:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"label": ("STRING", {"multiline": False}),
                             "mode": ("BOOLEAN", {"default": True, "forceInput": False}),
                             "body": ("STRING", {"multiline": True, "default": ""})}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "go"
    CATEGORY = "test"

    def go(self, label, mode, body):
        return (label,)


class Named(PlainText):
    pass


COLOURS = ["red", "green", "blue"]


class PickColour:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"index": ("INT", {"default": 0, "min": 0, "max": 2})}}
    RETURN_TYPES = (COLOURS,)  # a combo output, given as its list of values
    RETURN_NAMES = ("colour",)
    FUNCTION = "go"
    CATEGORY = "test"

    def go(self, index):
        return (COLOURS[index],)


class UseColour:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"colour": (COLOURS,)}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "go"
    OUTPUT_NODE = True
    CATEGORY = "test"

    def go(self, colour):
        return {"ui": {"text": [colour]}, "result": (colour,)}


NODE_CLASS_MAPPINGS = {"PlainTextNode": PlainText, "NamedNode": Named, "PickColour": PickColour,
                       "UseColour": UseColour}
NODE_DISPLAY_NAME_MAPPINGS = {"NamedNode": "A named node"}
'''


@pytest.fixture
def loaded(tmp_path):
    registry, dirs = load_pack(tmp_path, "fidelity_pack", PACK)
    return registry, dirs, sys.modules["sdgraph_custom_nodes.fidelity_pack"]


def test_latent_preview_offers_taesd_names_and_a_previewer_over_any_decoder(loaded):
    _, _, module = loaded
    with pytest.raises(NotImplementedError, match="TAESD"):
        module.TAESD(None, "taesd_decoder.pth")  # sdgraph has no TAESD model: the name imports, using it says so
    latent = torch.zeros(2, 4, 3, 5)
    latent[0, 0] = 1.0  # red at full scale, green and blue at the middle (0 in -1..1)
    kind, image, limit = module.preview(latent)
    assert (kind, image.size, image.mode, limit) == ("JPEG", (10, 6), "RGB", 512)
    assert image.getpixel((4, 3)) == (255, 127, 127)  # the first latent of the batch, -1..1 to 0..255


def test_v1_classes_are_described_as_comfyui_describes_them(loaded):
    registry, dirs, _ = loaded
    info = registry.describe(dirs)
    plain, named = info["PlainTextNode"], info["NamedNode"]
    assert plain["display_name"] == "PlainTextNode"  # no display name given: the class name, not made-up words
    assert named["display_name"] == "A named node"
    assert plain["python_module"] == named["python_module"] == "custom_nodes.fidelity_pack"
    required = plain["input"]["required"]
    assert required["label"] == ["STRING", {"multiline": False}]  # what the class wrote, False included
    assert required["mode"] == ["BOOLEAN", {"default": True, "forceInput": False}]
    assert required["body"] == ["STRING", {"multiline": True, "default": ""}]
    spec = registry.get("PlainTextNode").spec.inputs_by_name
    assert spec["body"].multiline and not spec["label"].multiline and not spec["mode"].force_input


def test_a_combo_output_is_described_as_its_values_and_feeds_a_combo_input(loaded):
    registry, dirs, _ = loaded
    info = registry.describe(dirs)["PickColour"]
    assert info["output"] == [["red", "green", "blue"]] and info["output_name"] == ["colour"]
    result = Executor(registry, Services(dirs=dirs), OutputCache()).run({
        "1": {"class_type": "PickColour", "inputs": {"index": 2}},
        "2": {"class_type": "UseColour", "inputs": {"colour": ["1", 0]}}})
    assert result.status == "success", result.error
    assert result.outputs["2"]["text"] == ["blue"]
