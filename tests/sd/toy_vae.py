"""A VAE-shaped toy module for the tiling tests and tools/comfy_reference/upscale_and_tiles.py: decode = a conv
(1x1: pointwise, 3x3: seeing its neighbours) and tanh, then nearest x8; encode = the mean of each 8x8 block, then a
1x1 conv. Seeded by its kernel size, so both sides build the same weights."""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


class ToyVae(nn.Module):
    def __init__(self, kernel: int) -> None:
        super().__init__()
        torch.manual_seed(kernel)
        self.dec = nn.Conv2d(4, 3, kernel, padding=kernel // 2)
        self.enc = nn.Conv2d(3, 4, 1)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        return F.interpolate(torch.tanh(self.dec(z)), scale_factor=8, mode="nearest")

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(F.avg_pool2d(x, 8))

    # the diffusers AutoencoderKL shape sdgraph's VaeModel calls
    def decode(self, z: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(sample=self.decode_raw(z))

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        latents = self.encode_raw(x)
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: latents))
