"""Conditioning nodes: prompts to CONDITIONING, ControlNet hints, combining, areas, zeroing."""
from __future__ import annotations

from typing import Any

import torch

from sdgraph.limits import current_limits, refusal
from sdgraph.node import Float, Input, Int, Node, Output, String
from sdgraph.paths import Dirs
from sdgraph.nodes.sd import conditioning_ops, controlnet_options, inpaint_conditioning, style_model, unclip
from sdgraph.nodes.sd.common import MAX_RESOLUTION, copy_conditioning
from sdgraph.nodes.sd.model_objects import ClipModel, ControlHint, ControlNetModel
from sdgraph.nodes.sd.primitives import NODES as PRIMITIVES
from sdgraph.nodes.sd.strings import NODES as STRINGS
from sdgraph.nodes.sd.text_encoding import check_prompt_chars, encode_prompt
from sdgraph.types import CLIP, CONDITIONING, CONTROL_NET, IMAGE, VAE


class TextEncode(Node):
    """Encode a prompt: 77-token chunks for long prompts, `(word:1.2)` emphasis, both encoders on SDXL."""

    category = "conditioning"
    aliases = ("CLIPTextEncode",)
    inputs = [String("text", multiline=True, dynamicPrompts=True), Input("clip", CLIP)]
    outputs = [Output(CONDITIONING)]

    def run(self, text: str, clip: ClipModel) -> tuple:
        cond, pooled = encode_prompt(clip, text, self.ctx.limits)
        extras: dict[str, Any] = {} if pooled is None else {"pooled_output": pooled}
        return ([[cond, extras]],)

    @classmethod
    def validate_inputs(cls, dirs: Dirs, text: str = "", **_: Any) -> str | None:
        return refusal(lambda: check_prompt_chars(current_limits(), "CLIPTextEncode.text", text))


class CLIPTextEncodeSDXLRefiner(Node):
    """Encode a prompt for the SDXL refiner with its aesthetic score and the original image size."""

    category = "advanced/conditioning"
    inputs = [Float("ascore", 6.0, min=0.0, max=1000.0, step=0.01),
              Int("width", 1024, min=0, max=MAX_RESOLUTION), Int("height", 1024, min=0, max=MAX_RESOLUTION),
              String("text", multiline=True, dynamicPrompts=True), Input("clip", CLIP)]
    outputs = [Output(CONDITIONING)]

    def run(self, ascore: float, width: int, height: int, text: str, clip: ClipModel) -> tuple:
        where = "CLIPTextEncodeSDXLRefiner.text"
        cond, pooled = encode_prompt(clip, text, self.ctx.limits, where)
        extras: dict[str, Any] = {"aesthetic_score": ascore, "width": width, "height": height}
        if pooled is not None:
            extras["pooled_output"] = pooled
        return ([[cond, extras]],)

    @classmethod
    def validate_inputs(cls, dirs: Dirs, text: str = "", **_: Any) -> str | None:
        return refusal(lambda: check_prompt_chars(current_limits(), "CLIPTextEncodeSDXLRefiner.text", text))


def _with_control(conditioning: list[Any], make: Any) -> list[list[Any]]:
    """Attach a hint to every entry, chained onto the entry's previous hint (one new hint per previous one)."""
    made: dict[int, ControlHint] = {}
    out = []
    for cond, extras in conditioning:
        previous = extras.get("control")
        key = id(previous)
        if key not in made:
            made[key] = make(previous)
        out.append([cond, {**extras, "control": made[key]}])
    return out


class ControlNet(Node):
    """Guide sampling with a ControlNet and a hint image, between two fractions of the steps. Chains."""

    category = "conditioning/controlnet"
    aliases = ("ControlNetApplyAdvanced",)
    inputs = [Input("positive", CONDITIONING), Input("negative", CONDITIONING), Input("control_net", CONTROL_NET),
              Input("image", IMAGE), Float("strength", 1.0, min=0.0, max=10.0, step=0.01),
              Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
              Float("end_percent", 1.0, min=0.0, max=1.0, step=0.001), Input("vae", VAE, optional=True)]
    outputs = [Output(CONDITIONING, "positive"), Output(CONDITIONING, "negative")]

    def run(self, positive: list, negative: list, control_net: ControlNetModel, image: torch.Tensor,
            strength: float, start_percent: float, end_percent: float, vae: Any = None) -> tuple:
        if strength == 0:
            return (positive, negative)
        made: dict[int, ControlHint] = {}

        def make(previous: ControlHint | None) -> ControlHint:
            return made.setdefault(id(previous), ControlHint(control_net, image, strength, start_percent,
                                                             end_percent, previous))
        return (_with_control(positive, make), _with_control(negative, make))


class ControlNetApply(Node):
    """Guide sampling with a ControlNet on one conditioning for all steps."""

    category = "conditioning/controlnet"
    inputs = [Input("conditioning", CONDITIONING), Input("control_net", CONTROL_NET), Input("image", IMAGE),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01)]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning: list, control_net: ControlNetModel, image: torch.Tensor, strength: float) -> tuple:
        if strength == 0:
            return (conditioning,)
        return (_with_control(conditioning, lambda prev: ControlHint(control_net, image, strength, 0.0, 1.0, prev)),)


class ConditioningCombine(Node):
    """Both conditionings, sampled together (their predictions are averaged)."""

    category = "conditioning"
    inputs = [Input("conditioning_1", CONDITIONING), Input("conditioning_2", CONDITIONING)]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning_1: list, conditioning_2: list) -> tuple:
        return (list(conditioning_1) + list(conditioning_2),)


class ConditioningSetArea(Node):
    """Restrict a conditioning to a rectangle of the image (pixels), with a strength."""

    category = "conditioning"
    inputs = [Input("conditioning", CONDITIONING),
              Int("width", 64, min=64, max=MAX_RESOLUTION, step=8), Int("height", 64, min=64, max=MAX_RESOLUTION, step=8),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8), Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.01)]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning: list, width: int, height: int, x: int, y: int, strength: float) -> tuple:
        area = (height // 8, width // 8, y // 8, x // 8)
        return (copy_conditioning(conditioning, area=area, strength=strength, set_area_to_bounds=False),)


class ConditioningZeroOut(Node):
    """The same conditioning with every tensor zeroed (a neutral negative for some models)."""

    category = "advanced/conditioning"
    inputs = [Input("conditioning", CONDITIONING)]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning: list) -> tuple:
        out = []
        for cond, extras in conditioning:
            extras = dict(extras)
            if extras.get("pooled_output") is not None:
                extras["pooled_output"] = torch.zeros_like(extras["pooled_output"])
            out.append([torch.zeros_like(cond), extras])
        return (out,)


NODES = [TextEncode, CLIPTextEncodeSDXLRefiner, ControlNet, ControlNetApply, ConditioningCombine, ConditioningSetArea, ConditioningZeroOut,
         *conditioning_ops.NODES, *inpaint_conditioning.NODES, *controlnet_options.NODES, *PRIMITIVES, *STRINGS,
         *unclip.NODES, *style_model.NODES]
