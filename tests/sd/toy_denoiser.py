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
