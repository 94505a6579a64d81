"""Placing and sizing whole images: stitch two side by side, fit one inside a padded frame, scale the longer side
to a length (IMAGE tensors [B, H, W, C])."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sdgraph.limits import Limits, check_memory
from sdgraph.node import Boolean, Combo, Input, Int, Node, Output
from sdgraph.nodes.sd.common import MAX_RESOLUTION
from sdgraph.nodes.sd.resize import resize
from sdgraph.types import IMAGE

DIRECTIONS = ("right", "down", "left", "up")
# A spacer's colour: grey levels fill every colour channel; the RGB ones fill the channels they name
SPACING_COLORS: dict[str, float | tuple[float, float, float]] = {
    "white": 1.0, "black": 0.0, "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}
PAD_METHODS = ("area", "bicubic", "nearest-exact", "bilinear", "lanczos")
MAX_DIMENSION_METHODS = ("area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic")  # sic: ComfyUI's list


def _resized(image: torch.Tensor, width: int, height: int, method: str, limits: Limits, where: str) -> torch.Tensor:
    """[B, H, W, C] resized to width x height (no crop, no clamp), refused first when over the budget."""
    check_memory(limits, where, "the resized images", (image.shape[0], height, width, image.shape[-1]))
    return resize(image.movedim(-1, 1), width, height, method).movedim(1, -1).to(image.dtype)


def _extend_batch(image: torch.Tensor, batch: int) -> torch.Tensor:
    """The batch grown to `batch` items by repeating its last one."""
    missing = batch - image.shape[0]
    return torch.cat([image, image[-1:].expand(missing, *image.shape[1:])]) if missing > 0 else image


def _centre_pad(image: torch.Tensor, dim: int, size: int, value: float) -> torch.Tensor:
    """`image` padded along `dim` (1: height, 2: width) to `size` with `value`, the extra split evenly (the odd
    pixel after)."""
    extra = size - image.shape[dim]
    if extra <= 0:
        return image
    before, after = extra // 2, extra - extra // 2
    pad = (0, 0, before, after) if dim == 2 else (0, 0, 0, 0, before, after)
    return F.pad(image, pad, mode="constant", value=value)


def _with_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Missing channels added as ones (an opaque alpha)."""
    missing = channels - image.shape[-1]
    return torch.cat([image, image.new_ones(*image.shape[:-1], missing)], dim=-1) if missing > 0 else image


def spacer(shape: tuple[int, int, int, int], color: str) -> torch.Tensor:
    """A [B, H, W, C] bar of the spacing colour; a fourth channel is an opaque alpha."""
    bar = torch.zeros(shape)
    value = SPACING_COLORS[color]
    if isinstance(value, tuple):
        for channel, level in enumerate(value[:shape[-1]]):
            bar[..., channel] = level
    else:
        bar[..., :min(3, shape[-1])] = value
    if shape[-1] == 4:
        bar[..., 3] = 1.0
    return bar


class ImageStitch(Node):
    """Join image2 to a side of image1, optionally scaling it (Lanczos) to image1's height or width first and
    putting a coloured bar between them; without the scaling the shorter image is centred on padding."""

    category = "image/transform"
    inputs = [Input("image1", IMAGE), Combo("direction", DIRECTIONS, default="right"),
              Boolean("match_image_size", True), Int("spacing_width", 0, min=0, max=1024, step=2),
              Combo("spacing_color", tuple(SPACING_COLORS), default="white"),
              Input("image2", IMAGE, optional=True)]
    outputs = [Output(IMAGE)]

    def run(self, image1: torch.Tensor, direction: str, match_image_size: bool, spacing_width: int,
            spacing_color: str, image2: torch.Tensor | None = None) -> tuple:
        if image2 is None:
            return (image1,)
        batch = max(image1.shape[0], image2.shape[0])
        image1, image2 = _extend_batch(image1, batch), _extend_batch(image2, batch).to(image1.dtype)
        sideways = direction in ("left", "right")
        (h1, w1), (h2, w2) = image1.shape[1:3], image2.shape[1:3]
        if match_image_size:  # Lanczos even at the same size: the image goes through 8 bits, as in ComfyUI
            width, height = (int(h1 * (w2 / h2)), h1) if sideways else (w1, int(w1 / (w2 / h2)))
            image2 = _resized(image2, max(1, width), max(1, height), "lanczos", self.ctx.limits,
                              "ImageStitch.match_image_size")
        else:
            value = SPACING_COLORS[spacing_color]
            value = value if isinstance(value, float) else 0.0
            dim = 1 if sideways else 2
            size = max(image1.shape[dim], image2.shape[dim])
            image1, image2 = _centre_pad(image1, dim, size, value), _centre_pad(image2, dim, size, value)
        channels = max(image1.shape[-1], image2.shape[-1])
        image1, image2 = _with_channels(image1, channels), _with_channels(image2, channels)
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        axis = 2 if sideways else 1
        if spacing_width > 0:
            spacing_width += spacing_width % 2
            across = max(image1.shape[3 - axis], image2.shape[3 - axis])
            shape = (batch, across, spacing_width, channels) if sideways else (batch, spacing_width, across, channels)
            parts.insert(1, spacer(shape, spacing_color).to(image1.dtype))
        out_shape = list(parts[0].shape)
        out_shape[axis] = sum(part.shape[axis] for part in parts)
        check_memory(self.ctx.limits, "ImageStitch.image2", "the stitched images", out_shape)
        return (torch.cat(parts, dim=axis),)


class ResizeAndPadImage(Node):
    """Scale images to fit inside target_width x target_height, keeping their aspect ratio, and centre them on a
    white or black frame of exactly that size."""

    category = "image/transform"
    inputs = [Input("image", IMAGE), Int("target_width", 512, min=1, max=MAX_RESOLUTION, step=1),
              Int("target_height", 512, min=1, max=MAX_RESOLUTION, step=1), Combo("padding_color", ("white", "black")),
              Combo("interpolation", PAD_METHODS)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, target_width: int, target_height: int, padding_color: str,
            interpolation: str) -> tuple:
        batch, height, width, channels = image.shape
        scale = min(target_width / width, target_height / height)
        new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
        check_memory(self.ctx.limits, "ResizeAndPadImage.target_width", "the padded images",
                     (batch, target_height, target_width, channels))
        scaled = _resized(image, new_w, new_h, interpolation, self.ctx.limits, "ResizeAndPadImage.target_width")
        out = torch.full((batch, target_height, target_width, channels), 0.0 if padding_color == "black" else 1.0,
                         dtype=image.dtype)
        top, left = (target_height - new_h) // 2, (target_width - new_w) // 2
        out[:, top:top + new_h, left:left + new_w] = scaled
        return (out,)


class ImageScaleToMaxDimension(Node):
    """Scale images so that their longer side is `largest_size` pixels, keeping the aspect ratio."""

    category = "image/upscaling"
    inputs = [Input("image", IMAGE), Combo("upscale_method", MAX_DIMENSION_METHODS),
              Int("largest_size", 512, min=0, max=MAX_RESOLUTION, step=1)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, upscale_method: str, largest_size: int) -> tuple:
        if largest_size < 1:
            raise ValueError("ImageScaleToMaxDimension.largest_size: 0 would leave no pixels; give at least 1")
        height, width = image.shape[1:3]
        if height > width:
            width, height = max(1, round(width / height * largest_size)), largest_size
        elif width > height:
            width, height = largest_size, max(1, round(height / width * largest_size))
        else:
            width = height = largest_size
        return (_resized(image, width, height, upscale_method, self.ctx.limits,
                         "ImageScaleToMaxDimension.largest_size"),)


NODES = [ImageStitch, ResizeAndPadImage, ImageScaleToMaxDimension]
