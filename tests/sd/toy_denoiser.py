"""The toy problem the sampler reference test shares with tools/comfy_reference/toy_samplers.py: Gaussian data
with a per-channel mean and std, whose exact denoiser is a linear map of x at each sigma, two schedules, and a
seeded start. No model; plain torch only (the dev script imports this next to a ComfyUI checkout)."""
from __future__ import annotations

import torch

SEED = 1234
SHAPE = (2, 4, 6, 6)
MEAN = torch.tensor([0.3, -0.5, 0.1, 0.8]).view(1, 4, 1, 1)
STD = torch.tensor([1.0, 0.6, 1.4, 0.8]).view(1, 4, 1, 1)


def toy_denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x0 | x] for x0 ~ N(MEAN, STD^2) per channel and x = x0 + sigma * eps."""
    var = STD.double() ** 2
    weight = (var / (var + float(sigma) ** 2)).float()
    return MEAN + weight * (x - MEAN)


def toy_sigmas(kind: str) -> torch.Tensor:
    """Float32 sigmas ending in 0: 10 Karras steps over SD1's range, or 7 deliberately uneven ones."""
    if kind == "karras":
        lo, hi, rho, n = 0.0292, 14.6146, 7.0, 10
        ramp = torch.linspace(0, 1, n, dtype=torch.float64)
        sig = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        return torch.cat([sig, torch.zeros(1, dtype=torch.float64)]).float()
    if kind == "uneven":
        return torch.tensor([12.0, 9.5, 4.0, 3.1, 1.2, 0.5, 0.07, 0.0], dtype=torch.float32)
    raise ValueError(kind)


def toy_start(sigmas: torch.Tensor) -> torch.Tensor:
    """Seeded unit noise scaled to the first sigma (the latent KSampler starts from on an empty latent)."""
    noise = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(SEED), dtype=torch.float32)
    return noise * sigmas[0]


UNCOND_MEAN = torch.tensor([-0.2, 0.4, 0.0, -0.6]).view(1, 4, 1, 1)
TOY_CFG = 1.7  # CFG++ is meant for small guidance scales


def _posterior_mean(x: torch.Tensor, sigma: float, mean: torch.Tensor) -> torch.Tensor:
    var = STD.double() ** 2
    weight = (var / (var + float(sigma) ** 2)).float()
    return mean + weight * (x - mean)


def toy_guided(x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """For the CFG++ samplers: (guided x0, unconditional x0), with the conditional prediction `toy_denoise` and
    the unconditional one the same data but centred on UNCOND_MEAN, combined with cfg TOY_CFG as ComfyUI does."""
    cond, uncond = toy_denoise(x, sigma), _posterior_mean(x, sigma, UNCOND_MEAN)
    return uncond + (cond - uncond) * TOY_CFG, uncond


class ToyGuidedDenoiser:
    """`denoise(x, sigma)` plus `with_uncond(x, sigma)` on the toy problem."""

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        return toy_guided(x, sigma)[0]

    def with_uncond(self, x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        return toy_guided(x, sigma)
