"""Conditioning nodes that edit CONDITIONING lists: blend, join, restrict to an area, a mask or a part of the
steps, and SDXL's two-prompt encoder with its size conditioning.

What each key they set means at sampling time is in `nodes.sd.cond_areas` (areas, masks, step windows); the
value contract is in `nodes.sd.model_objects`. Every node returns new lists and new extras dicts; the tensors
of entries it does not change are shared.
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from sdgraph.limits import current_limits, refusal
from sdgraph.node import Combo, Float, Input, Int, Node, Output, String
from sdgraph.paths import Dirs
from sdgraph.nodes.sd.common import MAX_RESOLUTION, copy_conditioning
from sdgraph.nodes.sd.model_objects import ClipModel
from sdgraph.nodes.sd.text_encoding import check_prompt_chars, encode_prompts
from sdgraph.types import CLIP, CONDITIONING, MASK

log = logging.getLogger(__name__)


def _first_entry(conditioning: list, where: str) -> list:
    """The one entry of a `conditioning_from` input (ComfyUI uses the first and warns about the rest)."""
    if not conditioning:
        raise ValueError(f"{where}: the conditioning is empty (it needs one entry)")
    if len(conditioning) > 1:
        log.warning("%s has %d entries; only the first is used", where, len(conditioning))
    return conditioning[0]


class ConditioningAverage(Node):
    """Blend each entry of conditioning_to towards the first entry of conditioning_from: strength 1 keeps
    conditioning_to, 0 gives conditioning_from (its tokens cut or zero-padded to conditioning_to's length). The
    SDXL pooled output is blended the same way."""

    category = "conditioning"
    inputs = [Input("conditioning_to", CONDITIONING), Input("conditioning_from", CONDITIONING),
              Float("conditioning_to_strength", 1.0, min=0.0, max=1.0, step=0.01)]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning_to: list, conditioning_from: list, conditioning_to_strength: float) -> tuple:
        cond_from, extras_from = _first_entry(conditioning_from, "ConditioningAverage.conditioning_from")[:2]
        pooled_from = extras_from.get("pooled_output")
        s = float(conditioning_to_strength)
        out = []
        for cond_to, extras_to in conditioning_to:
            if cond_from.shape[-1] != cond_to.shape[-1]:
                raise ValueError(f"ConditioningAverage.conditioning_from: token width {cond_from.shape[-1]} differs "
                                 f"from conditioning_to's {cond_to.shape[-1]} (different text encoders)")
            other = _fit_tokens(cond_from, cond_to.shape[1])
            blended = torch.mul(cond_to, s) + torch.mul(other, 1.0 - s)
            extras = dict(extras_to)
            pooled_to = extras_to.get("pooled_output", pooled_from)
            if pooled_from is not None and pooled_to is not None:
                extras["pooled_output"] = torch.mul(pooled_to, s) + torch.mul(pooled_from, 1.0 - s)
            elif pooled_from is not None:
                extras["pooled_output"] = pooled_from
            out.append([blended, extras])
        return (out,)


def _fit_tokens(cond: torch.Tensor, tokens: int) -> torch.Tensor:
    """`cond` [1, T, D] cut to `tokens`, or padded with zero tokens up to it."""
    cond = cond[:, :tokens]
    if cond.shape[1] < tokens:
        pad = torch.zeros((1, tokens - cond.shape[1], cond.shape[2]))
        cond = torch.cat([cond, pad], dim=1)
    return cond


class ConditioningConcat(Node):
    """Append the tokens of conditioning_from's first entry to each entry of conditioning_to (one longer prompt
    whose parts were encoded separately)."""

    category = "conditioning"
    inputs = [Input("conditioning_to", CONDITIONING), Input("conditioning_from", CONDITIONING)]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning_to: list, conditioning_from: list) -> tuple:
        cond_from = _first_entry(conditioning_from, "ConditioningConcat.conditioning_from")[0]
        out = []
        for cond_to, extras in conditioning_to:
            if cond_from.shape[-1] != cond_to.shape[-1]:
                raise ValueError(f"ConditioningConcat.conditioning_from: token width {cond_from.shape[-1]} differs "
                                 f"from conditioning_to's {cond_to.shape[-1]} (different text encoders)")
            out.append([torch.cat((cond_to, cond_from), 1), dict(extras)])
        return (out,)


class ConditioningSetAreaPercentage(Node):
    """Restrict a conditioning to a rectangle given as fractions of the image (resolved against the latent's
    size when sampling), with a strength."""

    category = "conditioning"
    inputs = [Input("conditioning", CONDITIONING),
              Float("width", 1.0, min=0, max=1.0, step=0.01), Float("height", 1.0, min=0, max=1.0, step=0.01),
              Float("x", 0, min=0, max=1.0, step=0.01), Float("y", 0, min=0, max=1.0, step=0.01),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01)]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning: list, width: float, height: float, x: float, y: float, strength: float) -> tuple:
        area = ("percentage", height, width, y, x)
        return (copy_conditioning(conditioning, area=area, strength=strength, set_area_to_bounds=False),)


class ConditioningSetAreaStrength(Node):
    """Set how strongly a conditioning weighs where several are combined."""

    category = "conditioning"
    inputs = [Input("conditioning", CONDITIONING), Float("strength", 1.0, min=0.0, max=10.0, step=0.01)]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning: list, strength: float) -> tuple:
        return (copy_conditioning(conditioning, strength=strength),)


class ConditioningSetMask(Node):
    """Restrict a conditioning to a mask, with a strength; "mask bounds" also evaluates it only on the mask's
    bounding box (at least 8x8 latent pixels), at that crop's resolution."""

    category = "conditioning"
    inputs = [Input("conditioning", CONDITIONING), Input("mask", MASK),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
              Combo("set_cond_area", ["default", "mask bounds"])]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning: list, mask: torch.Tensor, strength: float, set_cond_area: str) -> tuple:
        if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
            shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"ConditioningSetMask.mask: expected a MASK [B, H, W] or [H, W], got {shape}")
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        return (copy_conditioning(conditioning, mask=mask, set_area_to_bounds=set_cond_area != "default",
                                  mask_strength=strength),)


class ConditioningSetTimestepRange(Node):
    """Use a conditioning only between two fractions of the sampling process (0 = the first step, 1 = the
    end); outside it the entry is left out of the steps."""

    category = "advanced/conditioning"
    inputs = [Input("conditioning", CONDITIONING), Float("start", 0.0, min=0.0, max=1.0, step=0.001),
              Float("end", 1.0, min=0.0, max=1.0, step=0.001)]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning: list, start: float, end: float) -> tuple:
        return (copy_conditioning(conditioning, start_percent=start, end_percent=end),)


class CLIPTextEncodeSDXL(Node):
    """Encode SDXL's two prompts, text_g for OpenCLIP-G and text_l for CLIP-L, with the size conditioning the
    UNet sees: the original size, the crop's top-left corner and the target size (pixels)."""

    category = "advanced/conditioning"
    inputs = [Input("clip", CLIP),
              Int("width", 1024, min=0, max=MAX_RESOLUTION), Int("height", 1024, min=0, max=MAX_RESOLUTION),
              Int("crop_w", 0, min=0, max=MAX_RESOLUTION), Int("crop_h", 0, min=0, max=MAX_RESOLUTION),
              Int("target_width", 1024, min=0, max=MAX_RESOLUTION),
              Int("target_height", 1024, min=0, max=MAX_RESOLUTION),
              String("text_g", multiline=True, dynamicPrompts=True),
              String("text_l", multiline=True, dynamicPrompts=True)]
    outputs = [Output(CONDITIONING)]

    def run(self, clip: ClipModel, width: int, height: int, crop_w: int, crop_h: int, target_width: int,
            target_height: int, text_g: str, text_l: str) -> tuple:
        if not isinstance(clip, ClipModel) or not clip.is_sdxl:
            raise ValueError("CLIPTextEncodeSDXL.clip: needs an SDXL base CLIP (CLIP-L and OpenCLIP-G); use "
                             "CLIPTextEncode, or CLIPTextEncodeSDXLRefiner for the refiner")
        cond, pooled = encode_prompts(clip, [text_l, text_g], self.ctx.limits,
                                      ["CLIPTextEncodeSDXL.text_l", "CLIPTextEncodeSDXL.text_g"])
        extras: dict[str, Any] = {"width": width, "height": height, "crop_w": crop_w, "crop_h": crop_h,
                                  "target_width": target_width, "target_height": target_height}
        if pooled is not None:
            extras["pooled_output"] = pooled
        return ([[cond, extras]],)

    @classmethod
    def validate_inputs(cls, dirs: Dirs, text_g: str = "", text_l: str = "", **_: Any) -> str | None:
        def check() -> None:
            check_prompt_chars(current_limits(), "CLIPTextEncodeSDXL.text_g", text_g)
            check_prompt_chars(current_limits(), "CLIPTextEncodeSDXL.text_l", text_l)
        return refusal(check)


NODES = [ConditioningAverage, ConditioningConcat, ConditioningSetAreaPercentage, ConditioningSetAreaStrength,
         ConditioningSetMask, ConditioningSetTimestepRange, CLIPTextEncodeSDXL]
