"""Filters over whole images (IMAGE [B, H, W, C]): colour quantisation (Pillow), grey-level morphology with a square
window and Canny edges (kornia, the library ComfyUI calls), and seeded Gaussian noise."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from PIL import Image

from sdgraph.limits import check_memory
from sdgraph.node import Combo, Float, Input, Int, Node, Output
from sdgraph.nodes.sd.noise import SEED_MAX
from sdgraph.types import IMAGE

DITHERS = ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16")
MORPHOLOGY = ("erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat")


# ---- quantisation --------------------------------------------------------------------------------------------


def bayer_matrix(order: int) -> torch.Tensor:
    """The order x order ordered-dither matrix (order a power of two), values centred on 0 within (-0.5, 0.5),
    built up from 2x2 blocks in float32 as ComfyUI's numpy code does."""
    matrix = torch.zeros(1, 1, dtype=torch.float32)
    for level in range(1, int(math.log2(order)) + 1):
        scaled = matrix * (4 ** level)
        top = torch.cat([scaled - 1.5, scaled + 0.5], dim=1)
        bottom = torch.cat([scaled + 1.5, scaled - 0.5], dim=1)
        matrix = torch.cat([top, bottom], dim=0) / (4 ** level)
    return matrix


def _bayer_dithered(pixels: np.ndarray, palette: Image.Image, order: int) -> Image.Image:
    """Ordered dithering: the tiled Bayer matrix, scaled to the palette's spacing, added before a plain quantise."""
    spread = 2 * 256 / (len(palette.getpalette() or ()) // 3)
    threshold = spread * bayer_matrix(order) + 0.5
    height, width = pixels.shape[:2]
    tiles = threshold.tile(math.ceil(height / order), math.ceil(width / order))[:height, :width, None]
    shifted = (torch.from_numpy(pixels.astype(np.float32)) + tiles).clamp(0, 255).to(torch.uint8)
    return Image.fromarray(shifted.numpy()).quantize(palette=palette, dither=Image.Dither.NONE)


def quantize(image: torch.Tensor, colors: int, dither: str) -> torch.Tensor:
    """One [H, W, 3] image reduced to a palette of at most `colors` colours chosen by Pillow's median cut."""
    pixels = (image.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()  # truncated, as ComfyUI does
    picture = Image.fromarray(pixels)
    palette = picture.quantize(colors=colors)  # quantising against a palette image is what applies `dither`
    if dither == "none":
        out = picture.quantize(palette=palette, dither=Image.Dither.NONE)
    elif dither == "floyd-steinberg":
        out = picture.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    else:
        out = _bayer_dithered(pixels, palette, int(dither.split("-")[1]))
    return torch.from_numpy(np.asarray(out.convert("RGB")).astype(np.float32) / 255)


class ImageQuantize(Node):
    """Reduce each image to at most `colors` colours, with no dithering, Floyd-Steinberg error diffusion, or an
    ordered (Bayer) pattern."""

    category = "image/postprocessing"
    inputs = [Input("image", IMAGE), Int("colors", 256, min=1, max=256, step=1), Combo("dither", DITHERS)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, colors: int, dither: str) -> tuple:
        if image.shape[-1] != 3:
            raise ValueError(f"ImageQuantize.image: quantising needs RGB images, these have {image.shape[-1]} "
                             "channels")
        if dither not in DITHERS:
            raise ValueError(f"ImageQuantize.dither: {dither!r} is not one of {', '.join(DITHERS)}")
        return (torch.stack([quantize(item, colors, dither) for item in image]).to(image.dtype),)


# ---- morphology ----------------------------------------------------------------------------------------------


def _reach(size: int, length: int) -> int:
    """A window length with the same effect as `size` along an axis of `length` pixels: from 2 * length + 1 on,
    every window (whichever side its anchor favours) covers the whole axis."""
    return min(size, 2 * length + 1)


def _separable(op: Callable[..., torch.Tensor], x: torch.Tensor, size: int) -> torch.Tensor:
    """kornia's flat `size` x `size` erosion or dilation (pixels outside the image ignored) as a row pass then a
    column pass: the same minimum or maximum over the same square, in 2 * size steps instead of size ** 2."""
    rows = torch.ones(1, _reach(size, x.shape[-1]), dtype=x.dtype)
    columns = torch.ones(_reach(size, x.shape[-2]), 1, dtype=x.dtype)
    # a (1, n) kernel's anchor is column n // 2, a (n, 1) one's row n // 2: those of the square kernel
    return op(op(x, rows, engine="shift"), columns, engine="shift")


def erode(x: torch.Tensor, size: int) -> torch.Tensor:
    from kornia.morphology import erosion  # kornia on first use: listing nodes need not import it

    return _separable(erosion, x, size)


def dilate(x: torch.Tensor, size: int) -> torch.Tensor:
    from kornia.morphology import dilation

    return _separable(dilation, x, size)


def morphology(x: torch.Tensor, operation: str, size: int) -> torch.Tensor:
    """[B, C, H, W] under a grey-level operation with a square window, composed as kornia composes them."""
    if operation == "erode":
        return erode(x, size)
    if operation == "dilate":
        return dilate(x, size)
    if operation == "open":
        return dilate(erode(x, size), size)
    if operation == "close":
        return erode(dilate(x, size), size)
    if operation == "gradient":
        return dilate(x, size) - erode(x, size)
    if operation == "top_hat":
        return x - dilate(erode(x, size), size)
    if operation == "bottom_hat":
        return erode(dilate(x, size), size) - x
    raise ValueError(f"Morphology.operation: {operation!r} is not one of {', '.join(MORPHOLOGY)}")


class Morphology(Node):
    """Grey-level morphology with a kernel_size x kernel_size square: erode (minimum), dilate (maximum), open,
    close, gradient (dilated minus eroded), top hat (image minus opened), bottom hat (closed minus image)."""

    category = "image/postprocessing"
    inputs = [Input("image", IMAGE), Combo("operation", MORPHOLOGY), Int("kernel_size", 3, min=3, max=999, step=1)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, operation: str, kernel_size: int) -> tuple:
        if operation not in MORPHOLOGY:
            raise ValueError(f"Morphology.operation: {operation!r} is not one of {', '.join(MORPHOLOGY)}")
        height, width = image.shape[1:3]
        check_memory(self.ctx.limits, "Morphology.kernel_size", "the padded images",
                     (*image.shape[:1], image.shape[-1], height + _reach(kernel_size, height),
                      width + _reach(kernel_size, width)))
        return (morphology(image.movedim(-1, 1), operation, kernel_size).movedim(1, -1),)


# ---- edges and noise -----------------------------------------------------------------------------------------


class Canny(Node):
    """Canny edge detection (kornia: 5x5 Gaussian, Sobel gradients, non-maximum suppression, hysteresis between
    the two thresholds on the gradient magnitude); white edges on black, in all three channels."""

    category = "image/preprocessors"
    inputs = [Input("image", IMAGE), Float("low_threshold", 0.4, min=0.01, max=0.99, step=0.01),
              Float("high_threshold", 0.8, min=0.01, max=0.99, step=0.01)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, low_threshold: float, high_threshold: float) -> tuple:
        if low_threshold > high_threshold:
            raise ValueError(f"Canny.low_threshold: {low_threshold} is above high_threshold ({high_threshold})")
        if image.shape[-1] not in (1, 3, 4):
            raise ValueError(f"Canny.image: edges need grey, RGB or RGBA images, these have {image.shape[-1]} "
                             "channels")
        check_memory(self.ctx.limits, "Canny.image", "the gradient windows", (*image.shape[:3], 9))
        from kornia.filters import canny

        _, edges = canny(image[..., :3].movedim(-1, 1).float(), low_threshold, high_threshold)
        return (edges.expand(-1, 3, -1, -1).movedim(1, -1).contiguous().to(image.dtype),)


class ImageAddNoise(Node):
    """Add Gaussian noise times `strength`, clamped to 0..1; the noise comes from a CPU generator seeded with
    `seed`, one draw the shape of the whole batch (ComfyUI's draw)."""

    category = "image"
    inputs = [Input("image", IMAGE), Int("seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
              Float("strength", 0.5, min=0.0, max=1.0, step=0.01)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, seed: int, strength: float) -> tuple:
        generator = torch.Generator("cpu").manual_seed(int(seed) % (SEED_MAX + 1))
        noise = torch.randn(image.shape, generator=generator, dtype=torch.float32).to(image)
        return ((image + strength * noise).clamp(0.0, 1.0),)


NODES = [ImageQuantize, Morphology, Canny, ImageAddNoise]
