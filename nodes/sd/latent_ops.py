"""Latent operations: composite, blend and arithmetic on LATENT samples; batches (join, take a part, repeat); crop,
flip and rotate.

LATENT dicts travel as ComfyUI makes them travel: a node's output is a copy of its (first) input dict with new
`samples`, so `noise_mask` and `batch_index` pass through untouched unless the node says otherwise (the batch
nodes keep `batch_index` so that a part of a batch gets the noise it had in the whole batch; see noise.py).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sdgraph.limits import check_memory
from sdgraph.node import Boolean, Float, Input, Int, Node, Output
from sdgraph.nodes.sd.batching import to_batch
from sdgraph.nodes.sd.mask_nodes import MAX_RESOLUTION, choice
from sdgraph.types import LATENT, MASK

FLIPS = ("x-axis: vertically", "y-axis: horizontally")
ROTATIONS = ("none", "90 degrees", "180 degrees", "270 degrees")
Latent = dict[str, Any]


def fit_to(samples: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """[B, C, h, w] resized to height x width after a centre crop to the target's aspect ratio (ComfyUI's
    `common_upscale(..., "center")` crop: an equal margin, rounded, off both sides)."""
    h, w = samples.shape[-2:]
    if (h, w) == (height, width):
        return samples
    old, new = w / h, width / height
    dx = round((w - w * (new / old)) / 2) if old > new else 0
    dy = round((h - h * (old / new)) / 2) if old < new else 0
    cropped = samples[..., dy:h - dy, dx:w - dx]
    return F.interpolate(cropped, size=(height, width), mode=mode)


def like_first(first: torch.Tensor, second: torch.Tensor, batch: bool = True) -> torch.Tensor:
    """`second` brought to `first`'s channels-and-size (bilinear, centre crop) and, with `batch`, its batch size."""
    if second.shape[1:] != first.shape[1:]:
        if second.shape[1] != first.shape[1]:
            raise ValueError(f"the latents have {first.shape[1]} and {second.shape[1]} channels")
        second = fit_to(second, first.shape[-2], first.shape[-1], "bilinear")
    return to_batch(second, first.shape[0]) if batch else second


def _paste(destination: torch.Tensor, source: torch.Tensor, left: int, top: int, mask: torch.Tensor,
           ) -> torch.Tensor:
    """`source` blended by `mask` (1 = source) into a copy of `destination` at (left, top), in latent pixels."""
    out = destination.clone()
    h = min(source.shape[-2], out.shape[-2] - top)
    w = min(source.shape[-1], out.shape[-1] - left)
    if h > 0 and w > 0:
        region = out[..., top:top + h, left:left + w]
        m = mask[..., :h, :w]
        out[..., top:top + h, left:left + w] = m * source[..., :h, :w] + (1 - m) * region
    return out


class LatentComposite(Node):
    """Paste one latent onto another at (x, y) in pixels (x // 8, y // 8 in the latent); `feather` pixels of the
    pasted edges that lie inside the destination fade into it."""

    category = "latent"
    inputs = [Input("samples_to", LATENT), Input("samples_from", LATENT),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8), Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
              Int("feather", 0, min=0, max=MAX_RESOLUTION, step=8)]
    outputs = [Output(LATENT)]

    def run(self, samples_to: Latent, samples_from: Latent, x: int, y: int, feather: int) -> tuple:
        to, src = samples_to["samples"], samples_from["samples"]
        if src.shape[0] not in (1, to.shape[0]) or src.shape[1] != to.shape[1]:
            raise ValueError(f"LatentComposite.samples_from: a {list(src.shape)} latent cannot be pasted onto a "
                             f"{list(to.shape)} one (the batch must be 1 or the same, the channels the same)")
        left, top, feather = x // 8, y // 8, feather // 8
        src = src[..., :max(to.shape[-2] - top, 0), :max(to.shape[-1] - left, 0)]
        mask = torch.ones_like(src)
        h, w = src.shape[-2:]
        for t in range(feather):  # each edge's t-th row/column is scaled by (t + 1) / feather
            rate = (1.0 / feather) * (t + 1)
            if top != 0 and t < h:
                mask[..., t, :] *= rate
            if top + h < to.shape[-2] and h - 1 - t >= 0:
                mask[..., h - 1 - t, :] *= rate
            if left != 0 and t < w:
                mask[..., :, t] *= rate
            if left + w < to.shape[-1] and w - 1 - t >= 0:
                mask[..., :, w - 1 - t] *= rate
        return ({**samples_to, "samples": _paste(to, src, left, top, mask)},)


class LatentCompositeMasked(Node):
    """Paste a latent onto another at (x, y) in pixels; with a mask (resized to the source), only where it is set."""

    category = "latent"
    inputs = [Input("destination", LATENT), Input("source", LATENT),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8), Int("y", 0, min=0, max=MAX_RESOLUTION, step=8),
              Boolean("resize_source", False), Input("mask", MASK, optional=True)]
    outputs = [Output(LATENT)]

    def run(self, destination: Latent, source: Latent, x: int, y: int, resize_source: bool,
            mask: torch.Tensor | None = None) -> tuple:
        dst, src = destination["samples"], source["samples"].to(destination["samples"])
        if src.shape[1] != dst.shape[1]:
            raise ValueError(f"LatentCompositeMasked.source: {src.shape[1]} channels, the destination has "
                             f"{dst.shape[1]}")
        if resize_source:
            src = F.interpolate(src, size=dst.shape[-2:], mode="bilinear")
        src = to_batch(src, dst.shape[0])
        if mask is None:
            weights = torch.ones_like(src)
        else:
            weights = F.interpolate(mask.reshape(-1, 1, *mask.shape[-2:]).to(src), size=src.shape[-2:],
                                    mode="bilinear")
            weights = to_batch(weights, src.shape[0])
        left, top = min(x, dst.shape[-1] * 8) // 8, min(y, dst.shape[-2] * 8) // 8
        return ({**destination, "samples": _paste(dst, src, left, top, weights)},)


class LatentBlend(Node):
    """samples1 * blend_factor + samples2 * (1 - blend_factor); samples2 is resized (bicubic, centre crop) to
    samples1's size when they differ."""

    category = "_for_testing"
    inputs = [Input("samples1", LATENT), Input("samples2", LATENT),
              Float("blend_factor", 0.5, min=0, max=1, step=0.01)]
    outputs = [Output(LATENT)]

    def run(self, samples1: Latent, samples2: Latent, blend_factor: float) -> tuple:
        a, b = samples1["samples"], samples2["samples"]
        if a.shape != b.shape:
            b = fit_to(b, a.shape[-2], a.shape[-1], "bicubic")
        if b.shape[0] not in (1, a.shape[0]) or b.shape[1] != a.shape[1]:
            raise ValueError(f"LatentBlend.samples2: a {list(b.shape)} latent cannot be blended with a "
                             f"{list(a.shape)} one")
        return ({**samples1, "samples": a * blend_factor + b * (1 - blend_factor)},)


def _two(samples1: Latent, samples2: Latent, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        return samples1["samples"], like_first(samples1["samples"], samples2["samples"])
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


class LatentAdd(Node):
    """samples1 + samples2 (samples2 resized to samples1's size and batch)."""

    category = "latent/advanced"
    inputs = [Input("samples1", LATENT), Input("samples2", LATENT)]
    outputs = [Output(LATENT)]

    def run(self, samples1: Latent, samples2: Latent) -> tuple:
        a, b = _two(samples1, samples2, "LatentAdd.samples2")
        return ({**samples1, "samples": a + b},)


class LatentSubtract(Node):
    """samples1 - samples2 (samples2 resized to samples1's size and batch)."""

    category = "latent/advanced"
    inputs = [Input("samples1", LATENT), Input("samples2", LATENT)]
    outputs = [Output(LATENT)]

    def run(self, samples1: Latent, samples2: Latent) -> tuple:
        a, b = _two(samples1, samples2, "LatentSubtract.samples2")
        return ({**samples1, "samples": a - b},)


class LatentMultiply(Node):
    """The latent times a number."""

    category = "latent/advanced"
    inputs = [Input("samples", LATENT), Float("multiplier", 1.0, min=-10.0, max=10.0, step=0.01)]
    outputs = [Output(LATENT)]

    def run(self, samples: Latent, multiplier: float) -> tuple:
        return ({**samples, "samples": samples["samples"] * multiplier},)


class LatentInterpolate(Node):
    """Interpolate two latents pixel by pixel: the direction of the channel vectors is blended by `ratio` (1 =
    samples1), and so is their length."""

    category = "latent/advanced"
    inputs = [Input("samples1", LATENT), Input("samples2", LATENT),
              Float("ratio", 1.0, min=0.0, max=1.0, step=0.01)]
    outputs = [Output(LATENT)]

    def run(self, samples1: Latent, samples2: Latent, ratio: float) -> tuple:
        a, b = _two(samples1, samples2, "LatentInterpolate.samples2")
        # Each item's own channel norm. ComfyUI divides by norms without keeping the channel axis, which is the
        # same for a batch of one and misaligns (or fails) for larger batches.
        na, nb = (torch.linalg.vector_norm(t, dim=1, keepdim=True) for t in (a, b))
        mixed = torch.nan_to_num(a / na) * ratio + torch.nan_to_num(b / nb) * (1.0 - ratio)
        direction = torch.nan_to_num(mixed / torch.linalg.vector_norm(mixed, dim=1, keepdim=True))
        return ({**samples1, "samples": direction * (na * ratio + nb * (1.0 - ratio))},)


def _indices(samples: Latent) -> list[int]:
    return list(samples.get("batch_index", range(samples["samples"].shape[0])))


class LatentBatch(Node):
    """One batch: samples1's items, then samples2's (resized to samples1's size); each keeps its batch_index.
    samples1's noise mask is kept, as in ComfyUI."""

    category = "latent/batch"
    inputs = [Input("samples1", LATENT), Input("samples2", LATENT)]
    outputs = [Output(LATENT)]

    def run(self, samples1: Latent, samples2: Latent) -> tuple:
        a = samples1["samples"]
        try:
            b = like_first(a, samples2["samples"], batch=False)
        except ValueError as exc:
            raise ValueError(f"LatentBatch.samples2: {exc}") from None
        return ({**samples1, "samples": torch.cat([a, b.to(a)]),
                 "batch_index": _indices(samples1) + _indices(samples2)},)


class LatentFromBatch(Node):
    """`length` items of a batch from `batch_index` on (both cut to the batch). The items keep their batch_index,
    so sampling them alone gives the noise they had in the whole batch."""

    category = "latent/batch"
    inputs = [Input("samples", LATENT), Int("batch_index", 0, min=0, max=63, step=None),
              Int("length", 1, min=1, max=64, step=None)]
    outputs = [Output(LATENT)]

    def run(self, samples: Latent, batch_index: int, length: int) -> tuple:
        s = samples["samples"]
        start = min(s.shape[0] - 1, batch_index)
        stop = start + min(s.shape[0] - start, length)
        out = {**samples, "samples": s[start:stop].clone(), "batch_index": _indices(samples)[start:stop]}
        masks = samples.get("noise_mask")
        if masks is not None:
            if masks.shape[0] == 1:
                out["noise_mask"] = masks.clone()
            else:
                out["noise_mask"] = to_batch(masks, max(masks.shape[0], s.shape[0]))[start:stop].clone()
        return (out,)


class RepeatLatentBatch(Node):
    """The batch repeated `amount` times; batch indices continue past the batch's own span."""

    category = "latent/batch"
    inputs = [Input("samples", LATENT), Int("amount", 1, min=1, max=64, step=None)]
    outputs = [Output(LATENT)]

    def run(self, samples: Latent, amount: int) -> tuple:
        s = samples["samples"]
        check_memory(self.ctx.limits, "RepeatLatentBatch.amount", "the repeated latent",
                     (s.shape[0] * amount, *s.shape[1:]))
        out = {**samples, "samples": s.repeat(amount, *[1] * (s.dim() - 1))}
        masks = samples.get("noise_mask")
        if masks is not None and masks.shape[0] > 1:  # a single mask already covers any batch
            # ComfyUI repeats the mask batch as it is, even when it is shorter than the latent batch
            out["noise_mask"] = masks.repeat(amount, *[1] * (masks.dim() - 1))
        if "batch_index" in samples:
            index = list(samples["batch_index"])
            span = max(index) - min(index) + 1
            out["batch_index"] = index + [k + i * span for i in range(1, amount) for k in index]
        return (out,)


class LatentCrop(Node):
    """The width x height part (pixels, over 8 in the latent) from (x, y); the start is kept at least 8 latent
    pixels (64 image pixels) inside the latent."""

    category = "latent/transform"
    inputs = [Input("samples", LATENT),
              Int("width", 512, min=64, max=MAX_RESOLUTION, step=8), Int("height", 512, min=64, max=MAX_RESOLUTION, step=8),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=8), Int("y", 0, min=0, max=MAX_RESOLUTION, step=8)]
    outputs = [Output(LATENT)]

    def run(self, samples: Latent, width: int, height: int, x: int, y: int) -> tuple:
        s = samples["samples"]
        left = max(0, min(x // 8, s.shape[-1] - 8))
        top = max(0, min(y // 8, s.shape[-2] - 8))
        return ({**samples, "samples": s[..., top:top + height // 8, left:left + width // 8]},)


class LatentFlip(Node):
    """Mirror the latent: upside down (x-axis) or left to right (y-axis). The noise mask is left as it is."""

    category = "latent/transform"
    inputs = [Input("samples", LATENT), choice("flip_method", FLIPS)]
    outputs = [Output(LATENT)]

    def run(self, samples: Latent, flip_method: str) -> tuple:
        if flip_method not in FLIPS:
            raise ValueError(f"LatentFlip.flip_method: {flip_method!r} is not one of {', '.join(FLIPS)}")
        dim = -2 if flip_method.startswith("x") else -1
        return ({**samples, "samples": torch.flip(samples["samples"], dims=[dim])},)


def quarter_turns(rotation: str, where: str) -> int:
    if rotation not in ROTATIONS:
        raise ValueError(f"{where}: {rotation!r} is not one of {', '.join(ROTATIONS)}")
    return ROTATIONS.index(rotation)


class LatentRotate(Node):
    """Rotate the latent clockwise by quarter turns. The noise mask is left as it is."""

    category = "latent/transform"
    inputs = [Input("samples", LATENT), choice("rotation", ROTATIONS)]
    outputs = [Output(LATENT)]

    def run(self, samples: Latent, rotation: str) -> tuple:
        k = quarter_turns(rotation, "LatentRotate.rotation")
        return ({**samples, "samples": torch.rot90(samples["samples"], k=k, dims=[-1, -2])},)


NODES = [LatentComposite, LatentCompositeMasked, LatentBlend, LatentAdd, LatentSubtract, LatentMultiply,
         LatentInterpolate, LatentBatch, LatentFromBatch, RepeatLatentBatch, LatentCrop, LatentFlip, LatentRotate]
