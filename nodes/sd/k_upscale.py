"""Samplers that change the latent's size while they sample: ComfyUI's SamplerLCMUpscale.

Same interface and parametrisation as `k_samplers`, except for the noise: the latent grows between steps, so
the fresh noise comes from `noise_like(x)` (noise shaped like its argument) instead of a noise sampler.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from sdgraph.nodes.sd.k_samplers import DenoiseFn, NoiseSampler, StepCallback, Tensor, _report, as_floats
from sdgraph.nodes.sd.resize import resize

NoiseLike = Callable[[Tensor], Tensor]
UPSCALE_METHODS = ("bislerp", "nearest-exact", "bilinear", "area", "bicubic")


def upscale_ratios(sigma_count: int, total_upscale: float, upscale_steps: int | None) -> list[float]:
    """For a schedule of `sigma_count` sigmas: the size factor (of the starting latent) after each of the first
    steps, evenly spaced up to `total_upscale` over `upscale_steps` steps (by default about half of them); the
    latent keeps its size after the last of them."""
    if upscale_steps is None:
        points = max(sigma_count // 2 + 1, 2)
    else:
        points = min(upscale_steps + 1, sigma_count + 1)
    return np.linspace(1.0, total_upscale, points)[1:].tolist()


def sample_lcm_upscale(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                       noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                       noise_like: NoiseLike | None = None, total_upscale: float = 2.0,
                       upscale_method: str = "bislerp", upscale_steps: int | None = None) -> Tensor:
    """LCM sampling (see `k_samplers.sample_lcm`) that resizes the clean estimate before re-noising it, by
    `upscale_ratios` of the starting size (rounded to whole latent pixels), until it is `total_upscale` times
    as large."""
    if upscale_method not in UPSCALE_METHODS:
        raise ValueError(f"lcm upscale: upscale_method must be one of {', '.join(UPSCALE_METHODS)}, "
                         f"not {upscale_method!r}")
    s = as_floats(sigmas)
    noise_like = noise_like or _default_noise_like()
    ratios = upscale_ratios(len(s), total_upscale, upscale_steps)
    height, width = x.shape[-2:]
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        x = denoised
        if i < len(ratios):
            x = resize(x, round(width * ratios[i]), round(height * ratios[i]), upscale_method).to(denoised.dtype)
        if s[i + 1] > 0:
            x = x + noise_like(x) * s[i + 1]
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def _default_noise_like(seed: int = 0) -> NoiseLike:
    generator = torch.Generator("cpu").manual_seed(seed)
    return lambda x: torch.randn(tuple(x.shape), generator=generator, dtype=torch.float32).to(x.device, x.dtype)


# not one of KSampler's names: SamplerLCMUpscale's sampler, which sampling gives a `noise_like`
RESIZING_SAMPLERS = {"lcm_upscale": sample_lcm_upscale}
