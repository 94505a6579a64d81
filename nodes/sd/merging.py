"""Model and text-encoder merging nodes: weight patches that blend another model's weights into this one.

Each merge records patches (`add_patches` with ComfyUI's strengths); nothing is computed until the merged
model is used, and the source models stay untouched. Weights are named as ComfyUI names them, so the
block-wise merges take the original UNet's block prefixes ("input_blocks.4.", "middle_block.1.", "out.").
"""
from __future__ import annotations

from typing import Any

from sdgraph.node import Float, Input, Node, Output
from sdgraph.nodes.sd.comfy_keys import UNET_PREFIX
from sdgraph.nodes.sd.model_objects import ClipModel, DiffusionModel
from sdgraph.types import CLIP, MODEL

_CATEGORY = "advanced/model_merging"
_SKIPPED_CLIP = (".position_ids", ".logit_scale")  # buffers in ComfyUI's CLIP, never merged


def _ratio(name: str) -> Any:
    return Float(name, 1.0, min=0.0, max=1.0, step=0.01)


def _multiplier() -> Any:
    return Float("multiplier", 1.0, min=-10.0, max=10.0, step=0.01)


def merge_models(base: DiffusionModel, other: DiffusionModel, strength_other: float,
                 strength_base: float) -> DiffusionModel:
    """base * strength_base + other * strength_other, for every UNet weight."""
    merged = base.clone()
    merged.add_patches(other.get_key_patches(UNET_PREFIX), strength_other, strength_base)
    return merged


def merge_clips(base: ClipModel, other: ClipModel, strength_other: float, strength_base: float) -> ClipModel:
    merged = base.clone()
    patches = {k: v for k, v in other.get_key_patches().items() if not k.endswith(_SKIPPED_CLIP)}
    merged.add_patches(patches, strength_other, strength_base)
    return merged


def block_ratio(key: str, ratios: dict[str, float], default: float) -> float:
    """The ratio of the longest block prefix that starts the key's UNet name (the default when none does)."""
    name = key[len(UNET_PREFIX):]
    best, ratio = 0, default
    for prefix, value in ratios.items():
        if name.startswith(prefix) and len(prefix) > best:
            best, ratio = len(prefix), value
    return ratio


def merge_blocks(base: DiffusionModel, other: DiffusionModel, ratios: dict[str, float]) -> DiffusionModel:
    """A merge whose ratio (the share of `base`) is chosen per block; the first ratio given is the default."""
    default = next(iter(ratios.values()))
    groups: dict[float, dict[str, Any]] = {}
    for key, value in other.get_key_patches(UNET_PREFIX).items():
        groups.setdefault(block_ratio(key, ratios, default), {})[key] = value
    merged = base.clone()
    for ratio, patches in groups.items():
        merged.add_patches(patches, 1.0 - ratio, ratio)
    return merged


class ModelMergeSimple(Node):
    """Blend two models: ratio 1 keeps model1, 0 gives model2."""

    category = _CATEGORY
    inputs = [Input("model1", MODEL), Input("model2", MODEL), _ratio("ratio")]
    outputs = [Output(MODEL)]

    def run(self, model1: DiffusionModel, model2: DiffusionModel, ratio: float) -> tuple:
        return (merge_models(model1, model2, 1.0 - ratio, ratio),)


class ModelMergeSubtract(Node):
    """The difference (model1 - model2) * multiplier, weight by weight (feed it to ModelMergeAdd)."""

    category = _CATEGORY
    inputs = [Input("model1", MODEL), Input("model2", MODEL), _multiplier()]
    outputs = [Output(MODEL)]

    def run(self, model1: DiffusionModel, model2: DiffusionModel, multiplier: float) -> tuple:
        return (merge_models(model1, model2, -multiplier, multiplier),)


class ModelMergeAdd(Node):
    """The sum of two models' weights (to add a difference made by ModelMergeSubtract)."""

    category = _CATEGORY
    inputs = [Input("model1", MODEL), Input("model2", MODEL)]
    outputs = [Output(MODEL)]

    def run(self, model1: DiffusionModel, model2: DiffusionModel) -> tuple:
        return (merge_models(model1, model2, 1.0, 1.0),)


class ModelMergeBlocks(Node):
    """Blend two models with one ratio for the input blocks, one for the middle block and one for the rest."""

    category = _CATEGORY
    inputs = [Input("model1", MODEL), Input("model2", MODEL), _ratio("input"), _ratio("middle"), _ratio("out")]
    outputs = [Output(MODEL)]

    def run(self, model1: DiffusionModel, model2: DiffusionModel, **ratios: float) -> tuple:
        return (merge_blocks(model1, model2, ratios),)


def _block_inputs(levels: int, trailing_dot: bool) -> list[Any]:
    dot = "." if trailing_dot else ""
    names = ["time_embed.", "label_emb."] + [f"input_blocks.{i}{dot}" for i in range(levels)] + \
        [f"middle_block.{i}{dot}" for i in range(3)] + [f"output_blocks.{i}{dot}" for i in range(levels)] + ["out."]
    return [_ratio(name) for name in names]


class ModelMergeSD1(ModelMergeBlocks):
    """Blend two SD 1.x models with a ratio for each block of the UNet."""

    category = "advanced/model_merging/model_specific"
    inputs = [Input("model1", MODEL), Input("model2", MODEL), *_block_inputs(12, trailing_dot=True)]


class ModelMergeSD2(ModelMergeSD1):
    """Blend two SD 2.x models with a ratio for each block of the UNet (SD 2.x has SD 1.x's blocks)."""


class ModelMergeSDXL(ModelMergeBlocks):
    """Blend two SDXL models with a ratio for each block of the UNet."""

    category = "advanced/model_merging/model_specific"
    inputs = [Input("model1", MODEL), Input("model2", MODEL), *_block_inputs(9, trailing_dot=False)]


class CLIPMergeSimple(Node):
    """Blend two text encoders: ratio 1 keeps clip1, 0 gives clip2."""

    category = _CATEGORY
    inputs = [Input("clip1", CLIP), Input("clip2", CLIP), _ratio("ratio")]
    outputs = [Output(CLIP)]

    def run(self, clip1: ClipModel, clip2: ClipModel, ratio: float) -> tuple:
        return (merge_clips(clip1, clip2, 1.0 - ratio, ratio),)


class CLIPMergeSubtract(Node):
    """The difference (clip1 - clip2) * multiplier, weight by weight."""

    category = _CATEGORY
    inputs = [Input("clip1", CLIP), Input("clip2", CLIP), _multiplier()]
    outputs = [Output(CLIP)]

    def run(self, clip1: ClipModel, clip2: ClipModel, multiplier: float) -> tuple:
        return (merge_clips(clip1, clip2, -multiplier, multiplier),)


class CLIPMergeAdd(Node):
    """The sum of two text encoders' weights."""

    category = _CATEGORY
    inputs = [Input("clip1", CLIP), Input("clip2", CLIP)]
    outputs = [Output(CLIP)]

    def run(self, clip1: ClipModel, clip2: ClipModel) -> tuple:
        return (merge_clips(clip1, clip2, 1.0, 1.0),)


NODES = [ModelMergeSimple, ModelMergeBlocks, ModelMergeSubtract, ModelMergeAdd, ModelMergeSD1, ModelMergeSD2,
         ModelMergeSDXL, CLIPMergeSimple, CLIPMergeSubtract, CLIPMergeAdd]
