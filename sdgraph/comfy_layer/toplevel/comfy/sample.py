"""`comfy.sample` for plugins: the initial noise of a seed, drawn exactly as ComfyUI draws it.

`sample` (sampling from noise a pack made itself) is not provided yet; `nodes.common_ksampler` is.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from sdgraph.nodes.sd.noise import batch_noise


def prepare_noise(latent_image: torch.Tensor, seed: int, noise_inds: Sequence[int] | None = None) -> torch.Tensor:
    """CPU noise shaped like latent_image from `seed`; with noise_inds, item i is the noise the seed gives the
    batch index noise_inds[i] (so one image of a batch can be reproduced alone)."""
    return batch_noise(seed, latent_image.shape, noise_inds).to(latent_image.dtype)


def fix_empty_latent_channels(model: Any, latent_image: torch.Tensor) -> torch.Tensor:
    """An all-zero latent with another channel count than the model's becomes zeros with the model's count."""
    fmt = getattr(model, "latent_format", None)
    channels = getattr(fmt, "latent_channels", None)
    if channels and latent_image.shape[1] != channels and not torch.count_nonzero(latent_image):
        return torch.zeros((latent_image.shape[0], channels, *latent_image.shape[2:]), dtype=latent_image.dtype)
    return latent_image


def sample(*args: Any, **kwargs: Any) -> torch.Tensor:
    raise NotImplementedError("comfy.sample.sample is not provided by sdgraph's ComfyUI layer yet; "
                              "use nodes.common_ksampler")
