"""`comfy.k_diffusion.sampling` for plugins: k-diffusion's sampler functions, run by sdgraph's samplers.

`sample_<name>(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None, **options)`
is ComfyUI's calling convention: `model(x, sigma * ones(batch), **extra_args)` returns the denoised estimate
and `callback({"x", "i", "sigma", "sigma_hat", "denoised"})` is called after each step. Each runs the sdgraph
sampler of that name (sdgraph.nodes.sd.k_samplers) with the options it takes; an option it does not take, at a
value other than k-diffusion's neutral default, raises TypeError. Without a noise_sampler the noise is seeded
from extra_args["seed"] (0 when absent). The CFG++ and latent-resizing samplers, which need more than a
denoised estimate, are not provided here.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import torch

from sdgraph.nodes.sd import k_samplers
from sdgraph.nodes.sd.k_cfgpp import CFG_PP_SAMPLERS
from sdgraph.nodes.sd.k_upscale import RESIZING_SAMPLERS

# k-diffusion options that change nothing at these values (ComfyUI's callers pass them explicitly)
_NEUTRAL = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}


def append_zero(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_zeros([1])])


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The ODE derivative dx/dsigma = (x - denoised) / sigma (sigma broadcast over x's dimensions)."""
    sigma = sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim)) if isinstance(sigma, torch.Tensor) else sigma
    return (x - denoised) / sigma


def get_ancestral_step(sigma_from: Any, sigma_to: Any, eta: float = 1.0) -> tuple[Any, Any]:
    """(sigma_down, sigma_up) of an ancestral step from sigma_from to sigma_to."""
    if not eta:
        return sigma_to, 0.0
    up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    down = (sigma_to ** 2 - up ** 2) ** 0.5
    return down, up


def default_noise_sampler(x: torch.Tensor, seed: int | None = None) -> Callable[[Any, Any], torch.Tensor]:
    if seed is None:
        return lambda sigma, sigma_next: torch.randn_like(x)
    return k_samplers.default_noise_sampler(x, seed)


def _options(function: Callable[..., Any], name: str, options: dict[str, Any]) -> dict[str, Any]:
    accepted = set(inspect.signature(function).parameters)
    out = {}
    for key, value in options.items():
        if key in accepted:
            out[key] = value
        elif key in _NEUTRAL and value == _NEUTRAL[key]:
            continue
        else:
            raise TypeError(f"comfy.k_diffusion.sampling.sample_{name}: option {key}={value!r} is not supported "
                            f"by sdgraph's {name} sampler")
    return out


def _adapter(name: str) -> Callable[..., torch.Tensor]:
    def sample(model: Callable[..., torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
               extra_args: dict[str, Any] | None = None, callback: Callable[[dict], None] | None = None,
               disable: Any = None, noise_sampler: Any = None, **options: Any) -> torch.Tensor:
        extra = dict(extra_args or {})
        seed = extra.pop("seed", None)
        function = k_samplers.get_sampler(name)
        kwargs = _options(function, name, options)
        ones = x.new_ones([x.shape[0]])

        def denoise(latent: torch.Tensor, sigma: float) -> torch.Tensor:
            return model(latent, ones * sigma, **extra)

        def report(step: k_samplers.Step) -> None:
            if callback is not None:
                callback({"x": step.x, "i": step.i, "sigma": sigmas[step.i], "sigma_hat": sigmas[step.i],
                          "denoised": step.denoised})

        noise = noise_sampler or k_samplers.default_noise_sampler(x, seed or 0)
        return function(denoise, x, sigmas, noise_sampler=noise, callback=report, **kwargs)

    sample.__name__ = sample.__qualname__ = f"sample_{name}"
    return sample


for _name in k_samplers.SAMPLER_NAMES:
    if _name not in CFG_PP_SAMPLERS and _name not in RESIZING_SAMPLERS and _name != "ddim":
        globals()[f"sample_{_name}"] = _adapter(_name)
