"""Mask nodes: make, invert, combine, grow, feather, crop and threshold MASK tensors [B, H, W], and turn images into
masks and back (one channel, one colour, or the alpha channel)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sdgraph.limits import check_memory, current_limits, refusal
from sdgraph.node import Boolean, Combo, Float, Input, Int, Node, Output
from sdgraph.paths import Dirs
from sdgraph.spec import InputSpec
from sdgraph.types import IMAGE, MASK

MAX_RESOLUTION = 16384  # ComfyUI's bound on every size and offset of these nodes
CHANNELS = ("red", "green", "blue", "alpha")
OPERATIONS = ("multiply", "add", "subtract", "and", "or", "xor")


def choice(name: str, choices: tuple[str, ...]) -> InputSpec:
    """A combo declared as ComfyUI declares it: the list alone, no default (an editor shows the first)."""
    return Combo(name, choices).model_copy(update={"default": None})


def as_masks(mask: torch.Tensor) -> torch.Tensor:
    """A MASK as [B, H, W] (a single [H, W] mask becomes a batch of one)."""
    return mask.reshape(-1, mask.shape[-2], mask.shape[-1])


class SolidMask(Node):
    """A mask of one value everywhere."""

    category = "mask"
    inputs = [Float("value", 1.0, min=0.0, max=1.0, step=0.01),
              Int("width", 512, min=1, max=MAX_RESOLUTION, step=1), Int("height", 512, min=1, max=MAX_RESOLUTION, step=1)]
    outputs = [Output(MASK)]

    def run(self, value: float, width: int, height: int) -> tuple:
        check_memory(self.ctx.limits, "SolidMask.width", "the mask", (1, height, width))
        return (torch.full((1, height, width), float(value), dtype=torch.float32),)

    @classmethod
    def validate_inputs(cls, dirs: Dirs, width: int = 512, height: int = 512, **_: Any) -> str | None:
        return refusal(lambda: check_memory(current_limits(), "SolidMask.width", "the mask", (1, height, width)))


class InvertMask(Node):
    """One minus the mask."""

    category = "mask"
    inputs = [Input("mask", MASK)]
    outputs = [Output(MASK)]

    def run(self, mask: torch.Tensor) -> tuple:
        return (1.0 - mask,)


class MaskComposite(Node):
    """Combine a source mask into a destination mask with its top-left corner at (x, y); the result is clamped to
    0..1. "and", "or" and "xor" act on the masks rounded to 0/1."""

    category = "mask"
    inputs = [Input("destination", MASK), Input("source", MASK),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=1), Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
              choice("operation", OPERATIONS)]
    outputs = [Output(MASK)]

    def run(self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, operation: str) -> tuple:
        if operation not in OPERATIONS:
            raise ValueError(f"MaskComposite.operation: {operation!r} is not one of {', '.join(OPERATIONS)}")
        out = as_masks(destination).clone()
        source = as_masks(source).to(out)
        if source.shape[0] not in (1, out.shape[0]):
            raise ValueError(f"MaskComposite.source: a batch of {source.shape[0]} masks cannot be combined with a "
                             f"destination batch of {out.shape[0]} (give one mask or as many)")
        bottom, right = min(y + source.shape[1], out.shape[1]), min(x + source.shape[2], out.shape[2])
        if bottom > y and right > x:
            dst = out[:, y:bottom, x:right]
            src = source[:, :bottom - y, :right - x]
            if operation == "multiply":
                combined = dst * src
            elif operation == "add":
                combined = dst + src
            elif operation == "subtract":
                combined = dst - src
            else:  # rounding is half-to-even, as torch rounds: 0.5 counts as unset
                a, b = dst.round().bool(), src.round().bool()
                combined = {"and": a & b, "or": a | b, "xor": a ^ b}[operation].float()
            out[:, y:bottom, x:right] = combined
        # the whole result is clamped, so destination values outside 0..1 are clipped too (as in ComfyUI)
        return (out.clamp(0.0, 1.0),)


def _morph_step(mask: torch.Tensor, grow: bool, square: bool) -> torch.Tensor:
    """One 3x3 grey dilation (grow) or erosion of [B, H, W] masks; the edges extend outwards, so pixels outside
    the mask never win. `square` uses the full 3x3 footprint, otherwise the plus-shaped one."""
    padded = F.pad(mask[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    h, w = mask.shape[-2:]
    offsets = [(dy, dx) for dy in range(3) for dx in range(3) if square or dy == 1 or dx == 1]
    shifted = torch.stack([padded[:, dy:dy + h, dx:dx + w] for dy, dx in offsets])
    return shifted.amax(0) if grow else shifted.amin(0)


class GrowMask(Node):
    """Grow (expand > 0) or shrink (expand < 0) a mask by that many pixels; tapered corners grow diamond-wise."""

    category = "mask"
    inputs = [Input("mask", MASK), Int("expand", 0, min=-MAX_RESOLUTION, max=MAX_RESOLUTION, step=1),
              Boolean("tapered_corners", True)]
    outputs = [Output(MASK)]

    def run(self, mask: torch.Tensor, expand: int, tapered_corners: bool) -> tuple:
        out = as_masks(mask).float()
        for _ in range(abs(expand)):
            out = _morph_step(out, expand > 0, square=not tapered_corners)
        return (out,)


class FeatherMask(Node):
    """Fade a mask linearly towards zero over the given number of pixels at each edge."""

    category = "mask"
    inputs = [Input("mask", MASK)] + [Int(side, 0, min=0, max=MAX_RESOLUTION, step=1)
                                       for side in ("left", "top", "right", "bottom")]
    outputs = [Output(MASK)]

    def run(self, mask: torch.Tensor, left: int, top: int, right: int, bottom: int) -> tuple:
        out = as_masks(mask).clone()
        height, width = out.shape[-2:]
        left, right, top, bottom = min(left, width), min(right, width), min(top, height), min(bottom, height)
        columns, rows = out.movedim(-1, 0), out.movedim(-2, 0)  # views: a row of these is a column/row of `out`
        for i in range(left):
            columns[i] *= (i + 1) / left
        # ComfyUI ramps the far edges from index -i, and -0 is the first column/row: the first step of the right
        # (bottom) ramp scales column (row) 0 by 1/right, and the last column gets 2/right instead of 1/right.
        for i in range(right):
            columns[-i] *= (i + 1) / right
        for i in range(top):
            rows[i] *= (i + 1) / top
        for i in range(bottom):
            rows[-i] *= (i + 1) / bottom
        return (out,)


class CropMask(Node):
    """The width x height part of a mask whose top-left corner is at (x, y) (cut at the mask's edges)."""

    category = "mask"
    inputs = [Input("mask", MASK), Int("x", 0, min=0, max=MAX_RESOLUTION, step=1), Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
              Int("width", 512, min=1, max=MAX_RESOLUTION, step=1), Int("height", 512, min=1, max=MAX_RESOLUTION, step=1)]
    outputs = [Output(MASK)]

    def run(self, mask: torch.Tensor, x: int, y: int, width: int, height: int) -> tuple:
        mask = as_masks(mask)
        if x >= mask.shape[2] or y >= mask.shape[1]:
            raise ValueError(f"CropMask.{'x' if x >= mask.shape[2] else 'y'}: ({x}, {y}) is outside the "
                             f"{mask.shape[2]}x{mask.shape[1]} mask")
        return (mask[:, y:y + height, x:x + width],)


class ThresholdMask(Node):
    """1 where the mask is above the value, 0 elsewhere."""

    category = "mask"
    inputs = [Input("mask", MASK), Float("value", 0.5, min=0.0, max=1.0, step=0.01)]
    outputs = [Output(MASK)]

    def run(self, mask: torch.Tensor, value: float) -> tuple:
        return ((mask > value).float(),)


class ImageToMask(Node):
    """One channel of an image as a mask."""

    category = "mask"
    inputs = [Input("image", IMAGE), choice("channel", CHANNELS)]
    outputs = [Output(MASK)]

    def run(self, image: torch.Tensor, channel: str) -> tuple:
        if channel not in CHANNELS:
            raise ValueError(f"ImageToMask.channel: {channel!r} is not one of {', '.join(CHANNELS)}")
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"ImageToMask.channel: the image has {image.shape[-1]} channels, no {channel} one")
        return (image[..., index],)


class MaskToImage(Node):
    """A mask as a grey image (the mask in all three channels)."""

    category = "mask"
    inputs = [Input("mask", MASK)]
    outputs = [Output(IMAGE)]

    def run(self, mask: torch.Tensor) -> tuple:
        return (as_masks(mask)[..., None].expand(-1, -1, -1, 3),)


class ImageColorToMask(Node):
    """1 where a pixel has exactly the colour 0xRRGGBB (channels taken to 8 bits, rounded), 0 elsewhere."""

    category = "mask"
    inputs = [Input("image", IMAGE), Int("color", 0, min=0, max=0xFFFFFF, display="color", step=1)]
    outputs = [Output(MASK)]

    def run(self, image: torch.Tensor, color: int) -> tuple:
        if image.shape[-1] < 3:
            raise ValueError(f"ImageColorToMask.image: needs 3 colour channels, the image has {image.shape[-1]}")
        levels = (image[..., :3].clamp(0.0, 1.0) * 255.0).round().to(torch.int64)
        packed = (levels[..., 0] << 16) + (levels[..., 1] << 8) + levels[..., 2]
        return ((packed == int(color)).float(),)


def _resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(as_masks(mask)[:, None].float(), size=(height, width), mode="bilinear")[:, 0]


class JoinImageWithAlpha(Node):
    """An RGBA image from an image and a mask; the mask is transparency (1 = transparent), as LoadImage makes it."""

    category = "mask/compositing"
    inputs = [Input("image", IMAGE), Input("alpha", MASK)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, alpha: torch.Tensor) -> tuple:
        count = min(image.shape[0], as_masks(alpha).shape[0])  # the shorter batch decides, as in ComfyUI
        opacity = 1.0 - _resize_mask(alpha, image.shape[1], image.shape[2])
        return (torch.cat([image[:count, ..., :3], opacity[:count, ..., None].to(image)], dim=-1),)


class SplitImageWithAlpha(Node):
    """The colour channels of an image, and its transparency as a mask (0 everywhere when it has no alpha)."""

    category = "mask/compositing"
    inputs = [Input("image", IMAGE)]
    outputs = [Output(IMAGE), Output(MASK)]

    def run(self, image: torch.Tensor) -> tuple:
        alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
        return (image[..., :3], 1.0 - alpha)


NODES = [SolidMask, InvertMask, MaskComposite, GrowMask, FeatherMask, CropMask, ThresholdMask, ImageToMask,
         MaskToImage, ImageColorToMask, JoinImageWithAlpha, SplitImageWithAlpha]
