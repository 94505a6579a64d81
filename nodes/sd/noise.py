"""Seeded noise drawn on the CPU, as ComfyUI draws it.

Initial noise: one CPU generator seeded with `seed` draws the whole batch at once. With a `batch_index` (a batch
taken from a larger one) the generator draws one item per index up to the largest and keeps the listed ones, so
an item gets the noise it had in the full batch.

Sampler noise (ancestral, LCM, DDPM, ER-SDE, SEEDS, SA-Solver, ...): a fresh generator seeded with `seed` draws batch-shaped noise at each step,
so its first draw repeats the initial noise of an unindexed batch. The SDE samplers (dpmpp_sde, dpmpp_2m_sde,
dpmpp_2m_sde_heun, dpmpp_3m_sde and their _gpu names) instead read a Brownian tree seeded with `seed` (torchsde; see
`brownian_sampler`).

`per_item=True` is sdgraph's alternative: item i (or its batch_index) has its own generator seeded with
`seed + i`, so an item's noise does not depend on the batch it is in, and every sampler (SDE ones too) goes on
drawing from those generators. It is off by default.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

NoiseSampler = Callable[[float, float], torch.Tensor]

_SEED_SPACE = 2 ** 64
SEED_MAX = _SEED_SPACE - 1  # the largest seed a node accepts


def _generator(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(int(seed) % _SEED_SPACE)


def _indices(batch: int, batch_index: Sequence[int] | None) -> list[int] | None:
    if batch_index is None or len(batch_index) != batch:
        return None
    return [int(k) for k in batch_index]


class SeededNoise:
    """Sampler noise for a batch; draws are [B, ...] float32 CPU tensors."""

    def __init__(self, seed: int, batch: int, batch_index: Sequence[int] | None = None,
                 per_item: bool = False) -> None:
        self.per_item = per_item
        if per_item:
            indices = _indices(batch, batch_index) or list(range(batch))
            self.generators = [_generator(int(seed) + k) for k in indices]
        else:
            self.generators = [_generator(seed)]
        self.batch = batch

    def draw(self, item_shape: Sequence[int]) -> torch.Tensor:
        if self.per_item:
            shape = (1, *item_shape)
            return torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in self.generators])
        return torch.randn((self.batch, *item_shape), generator=self.generators[0], dtype=torch.float32)

    def sampler(self, like: torch.Tensor) -> NoiseSampler:
        """A `noise_sampler(sigma, sigma_next)` for ancestral steps, on `like`'s device and dtype."""
        item_shape, device, dtype = tuple(like.shape[1:]), like.device, like.dtype

        def sample(sigma: float, sigma_next: float) -> torch.Tensor:
            return to_device(self.draw(item_shape), device, dtype)

        return sample


def to_device(cpu: torch.Tensor, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Move a CPU tensor without stalling the host on CUDA (pinned memory, asynchronous copy)."""
    if device.type == "cuda":
        return cpu.pin_memory().to(device=device, dtype=dtype, non_blocking=True)
    return cpu.to(device=device, dtype=dtype)


def batch_noise(seed: int, shape: Sequence[int], batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """The initial noise of a batch of `shape` (see the module docstring)."""
    return _draw_batch(_generator(seed), shape, batch_index)


def continued_noise(seed: int, shape: Sequence[int], batch_index: Sequence[int] | None = None
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """`noise_like(x)`: standard normal noise shaped like x (any shape, and x's memory layout, as `randn_like`
    draws it) on x's device, drawn on the CPU from the initial noise's generator after the initial noise.
    ComfyUI seeds its global generator when it draws the initial noise, and a sampler drawing with `randn_like`
    (SamplerLCMUpscale's) goes on from there."""
    generator = _generator(seed)
    _draw_batch(generator, shape, batch_index)

    def noise_like(x: torch.Tensor) -> torch.Tensor:
        drawn = torch.randn_like(x, device="cpu", dtype=torch.float32, generator=generator)
        return to_device(drawn, x.device, x.dtype)

    return noise_like


def _draw_batch(generator: torch.Generator, shape: Sequence[int], batch_index: Sequence[int] | None
                ) -> torch.Tensor:
    indices = _indices(shape[0], batch_index)
    if indices is None:
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    item = (1, *shape[1:])
    drawn = [torch.randn(item, generator=generator, dtype=torch.float32) for _ in range(max(indices) + 1)]
    return torch.cat([drawn[k] for k in indices])


def initial_noise(seed: int, latent: torch.Tensor, batch_index: Sequence[int] | None = None,
                  per_item: bool = False) -> tuple[torch.Tensor, SeededNoise]:
    """The CPU noise for a latent batch, and the source of the sampler's later noise."""
    if per_item:
        noise = SeededNoise(seed, latent.shape[0], batch_index, per_item=True)
        return noise.draw(latent.shape[1:]), noise
    return batch_noise(seed, latent.shape, batch_index), SeededNoise(seed, latent.shape[0])


BROWNIAN_SAMPLERS = frozenset({"dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun",
                               "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu"})


def brownian_sampler(seed: int, like: torch.Tensor, sigmas: Sequence[float]) -> NoiseSampler:
    """SDE noise from one seeded Brownian tree on the CPU over [smallest non-zero sigma, largest sigma], as
    ComfyUI's SDE samplers draw it: the increment between two sigmas, divided by the root of their distance."""
    import torchsde  # noqa: PLC0415 - only the SDE samplers need it

    values = [float(s) for s in sigmas]
    lo = torch.tensor(min(s for s in values if s > 0), dtype=torch.float32)
    hi = torch.tensor(max(values), dtype=torch.float32)
    tree = torchsde.BrownianTree(lo, torch.zeros(like.shape, dtype=torch.float32), hi, entropy=int(seed))
    device, dtype = like.device, like.dtype

    def sample(sigma: float, sigma_next: float) -> torch.Tensor:
        a = torch.tensor(float(sigma), dtype=torch.float32)
        b = torch.tensor(float(sigma_next), dtype=torch.float32)
        low, high = (a, b) if a < b else (b, a)
        sign = 1.0 if a < b else -1.0
        w = tree(low, high) * sign
        return to_device(w / (b - a).abs().sqrt(), device, dtype)

    sample.brownian = True  # type: ignore[attr-defined] - increments of one path: they add up
    return sample
