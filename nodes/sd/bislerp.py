"""Bislerp: resize a [B, C, H, W] latent by spherical interpolation of its channel vectors, one axis at a time.

Each output pixel sits between two source pixels where bilinear resampling would put it (half-pixel centres,
clamped at the edges); instead of averaging the two channel vectors it turns one into the other along the great
circle (slerp on their directions) and blends their lengths linearly, so that resized noise-like latents keep
their magnitude. Nearly equal directions take the first vector as it is; nearly opposite ones the linear blend.
This is ComfyUI's "bislerp" upscale method, computed as it computes it, down to the result's memory layout
(channels last), which noise drawn "like" the result follows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def bislerp(samples: Tensor, width: int, height: int) -> Tensor:
    """`samples` [B, C, H, W] resized to [B, C, height, width] (computed in float32, returned in its dtype)."""
    out = _slerp_axis(samples.float(), width, dim=3)
    out = _slerp_axis(out, height, dim=2).contiguous(memory_format=torch.channels_last)
    return out.to(samples.dtype)


def _neighbours(length: int, size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """For `size` output positions along an axis of `length`: the source index before each, the one after
    (clamped to the last) and the fraction of the way between them, from torch's bilinear placement."""
    def placed(values: Tensor) -> Tensor:
        return F.interpolate(values.reshape(1, 1, 1, -1), size=(1, size), mode="bilinear").reshape(-1)

    index = torch.arange(length, dtype=torch.float32, device=device)
    position = placed(index)
    after = index + 1
    after[-1] -= 1
    return position.to(torch.int64), placed(after).to(torch.int64), position - position.floor()


def _slerp_axis(x: Tensor, size: int, dim: int) -> Tensor:
    before, after, ratio = _neighbours(x.shape[dim], size, x.device)
    shape = [1, 1, 1, 1]
    shape[dim] = size
    return _slerp(x.index_select(dim, before), x.index_select(dim, after), ratio.reshape(shape))


def _slerp(a: Tensor, b: Tensor, ratio: Tensor) -> Tensor:
    """Spherical interpolation of the channel vectors (dim 1) of a and b, lengths blended linearly."""
    length_a, length_b = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    unit_a = torch.where(length_a == 0, 0.0, a / length_a)
    unit_b = torch.where(length_b == 0, 0.0, b / length_b)
    dot = (unit_a * unit_b).sum(dim=1, keepdim=True)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    out = torch.sin((1.0 - ratio) * omega) / sin_omega * unit_a + torch.sin(ratio * omega) / sin_omega * unit_b
    out = out * (length_a * (1.0 - ratio) + length_b * ratio)
    out = torch.where(dot > 1 - 1e-5, a, out)
    return torch.where(dot < 1e-5 - 1, a * (1.0 - ratio) + b * ratio, out)
