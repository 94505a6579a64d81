"""Seeded noise drawn on the CPU, so that a seed gives the same picture on any device.

Each batch item has its own generator, seeded with `seed + index` (index = the item's position, or its
`batch_index` when the latent carries one). Item i's noise, initial and ancestral alike, therefore does not depend
on the batch size, and item i of seed s is item 0 of seed s + i. With one item the stream is exactly
`torch.randn(shape, generator=torch.Generator().manual_seed(seed))` followed by the per-step draws, which is what a
diffusers pipeline given that generator draws.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

NoiseSampler = Callable[[float, float], torch.Tensor]

_SEED_SPACE = 2 ** 64


class SeededNoise:
    """One CPU generator per batch item; draws are [B, ...] float32 CPU tensors."""

    def __init__(self, seed: int, batch: int, batch_index: Sequence[int] | None = None) -> None:
        usable = batch_index is not None and len(batch_index) == batch
        indices = list(batch_index) if usable else list(range(batch))
        self.generators = [torch.Generator("cpu").manual_seed((int(seed) + int(k)) % _SEED_SPACE)
                           for k in indices]

    def draw(self, item_shape: Sequence[int]) -> torch.Tensor:
        """Noise [B, *item_shape]: one draw from each item's generator."""
        shape = (1, *item_shape)
        return torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in self.generators])

    def sampler(self, like: torch.Tensor) -> NoiseSampler:
        """A `noise_sampler(sigma, sigma_next)` for ancestral/SDE steps, on `like`'s device and dtype."""
        item_shape, device, dtype = tuple(like.shape[1:]), like.device, like.dtype

        def sample(sigma: float, sigma_next: float) -> torch.Tensor:
            return to_device(self.draw(item_shape), device, dtype)

        return sample


def to_device(cpu: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Move a CPU tensor without stalling the host on CUDA (pinned memory, asynchronous copy)."""
    if device.type == "cuda":
        return cpu.pin_memory().to(device=device, dtype=dtype, non_blocking=True)
    return cpu.to(device=device, dtype=dtype)


def initial_noise(seed: int, latent: torch.Tensor, batch_index: Sequence[int] | None = None
                  ) -> tuple[torch.Tensor, SeededNoise]:
    """The CPU noise for a latent batch and the generators that go on to feed the sampler's noise."""
    noise = SeededNoise(seed, latent.shape[0], batch_index)
    return noise.draw(latent.shape[1:]), noise
