"""CFG++ samplers (Chung et al. 2024, arXiv 2406.08070): ComfyUI's *_cfg_pp names.

Classifier-free guidance as usual gives the guided x0 estimate; CFG++ re-noises it along the *unconditional*
prediction's noise direction instead of the guided one, which keeps the trajectory on the data manifold at small
guidance scales (CFG++ is meant to be used with cfg around 1-2 rather than 5-8).

So these samplers need a second output from the denoiser: `denoise.with_uncond(x, sigma) -> (denoised,
uncond_denoised)` (`SDDenoiser` built with `keep_uncond=True`, which also evaluates the unconditional side at
cfg 1, as ComfyUI's disable_cfg1_optimization does). Plain `denoise(x, sigma)` calls are used where only the
guided estimate matters. Otherwise the interface and parametrisation are those of `k_samplers`.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from sdgraph.nodes.sd.k_samplers import (NoiseSampler, StepCallback, Tensor, _report, ancestral_step,
                                         ancestral_step_f32, as_floats, default_noise_sampler)
from sdgraph.nodes.sd.k_extra import _phi_1, _phi_2

GuidedDenoiseFn = Callable[[Tensor, float], Tensor]  # with a `with_uncond(x, sigma)` attribute


def _both(denoise: GuidedDenoiseFn, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    with_uncond = getattr(denoise, "with_uncond", None)
    if with_uncond is None:
        raise TypeError("a cfg_pp sampler needs a denoiser with a with_uncond(x, sigma) method")
    return with_uncond(x, sigma)


def sample_euler_ancestral_cfg_pp(denoise: GuidedDenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                                  noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                                  eta: float = 1.0) -> Tensor:
    """Euler (DDIM-like) CFG++: the guided x0 plus the unconditional noise direction scaled to sigma_down, then
    fresh noise of std sigma_up."""
    s = as_floats(sigmas)
    if eta:
        noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(s) - 1):
        denoised, uncond = _both(denoise, x, s[i])
        if s[i + 1] == 0:
            x = denoised
        else:
            down, up = ancestral_step(s[i], s[i + 1], eta)
            x = denoised + (x - uncond) * (down / s[i])
            if eta > 0:
                x = x + noise_sampler(s[i], s[i + 1]) * up
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_euler_cfg_pp(denoise: GuidedDenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                        noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None) -> Tensor:
    """Deterministic Euler CFG++ (`sample_euler_ancestral_cfg_pp` with eta 0)."""
    return sample_euler_ancestral_cfg_pp(denoise, x, sigmas, callback=callback, eta=0.0)


def sample_euler_cfg_pp_alternative(denoise: GuidedDenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                                    noise_sampler: NoiseSampler | None = None,
                                    callback: StepCallback | None = None) -> Tensor:
    """The other Euler CFG++ (ComfyUI's SamplerEulerCFGpp "alternative"): a plain Euler step along the slope of
    x - guided + unconditional towards the guided estimate, i.e. (x - 2 guided + unconditional) / sigma, down to
    the last sigma (no special last step)."""
    s = as_floats(sigmas)
    for i in range(len(s) - 1):
        denoised, uncond = _both(denoise, x, s[i])
        slope = (x - denoised + uncond - denoised) / s[i]
        x = x + slope * (s[i + 1] - s[i])
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_dpmpp_2s_ancestral_cfg_pp(denoise: GuidedDenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                                     noise_sampler: NoiseSampler | None = None,
                                     callback: StepCallback | None = None, eta: float = 1.0) -> Tensor:
    """DPM-Solver++(2S) CFG++: both stages carry x shifted by (guided - unconditional) x0, i.e. they decay the
    unconditional noise; the midpoint and sigma_down in float32 as ComfyUI computes them."""
    s = as_floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(s) - 1):
        denoised, uncond = _both(denoise, x, s[i])
        down, up = ancestral_step_f32(s[i], s[i + 1], eta)
        if down == 0:
            x = denoised
        else:
            t = torch.tensor(s[i], dtype=torch.float32).log().neg()
            t_next = torch.tensor(down, dtype=torch.float32).log().neg()
            h = t_next - t
            s_mid = float((t + 0.5 * h).neg().exp())
            x_2 = (x + (denoised - uncond)) * (s_mid / s[i]) - denoised * math.expm1(-float(h) / 2)
            denoised_2, uncond_2 = _both(denoise, x_2, s_mid)
            # as in ComfyUI, the whole step's shift takes the midpoint's unconditional estimate (the latest one
            # its post-CFG hook saw) with the start's guided one
            x = (x + (denoised - uncond_2)) * (down / s[i]) - denoised_2 * math.expm1(-float(h))
        if s[i + 1] > 0 and up > 0:
            x = x + noise_sampler(s[i], s[i + 1]) * up
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_dpmpp_2m_cfg_pp(denoise: GuidedDenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                           noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None) -> Tensor:
    """DPM-Solver++(2M) CFG++: x decays along the unconditional prediction, the second-order term uses the change
    from the previous step's unconditional prediction to this step's guided one."""
    s = as_floats(sigmas)
    previous: Tensor | None = None
    for i in range(len(s) - 1):
        denoised, uncond = _both(denoise, x, s[i])
        if s[i + 1] == 0:
            x = denoised
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            decay = math.exp(-h)
            x = denoised + (x - uncond) * decay
            if previous is not None:
                r = (math.log(s[i - 1]) - math.log(s[i])) / h
                x = x - (denoised - previous) * (math.expm1(-h) / (2 * r))
        previous = uncond
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_res_multistep_cfg_pp(denoise: GuidedDenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                                noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                                eta: float = 0.0) -> Tensor:
    """RES multistep (see `k_extra.sample_res_multistep`) in CFG++ form: the exponential integrator runs on the
    unconditional predictions from x shifted by (guided - unconditional); ancestral with eta > 0."""
    s = as_floats(sigmas)
    if eta:
        noise_sampler = noise_sampler or default_noise_sampler(x)
    previous: Tensor | None = None
    previous_down = 0.0
    for i in range(len(s) - 1):
        denoised, uncond = _both(denoise, x, s[i])
        down, up = ancestral_step(s[i], s[i + 1], eta)
        if down == 0 or previous is None:
            x = denoised + (x - uncond) * (down / s[i])
        else:
            lam, lam_old, lam_next, lam_prev = (-math.log(v) for v in (s[i], previous_down, down, s[i - 1]))
            h = lam_next - lam
            c2 = (lam_prev - lam_old) / h
            p1, p2 = _phi_1(-h), _phi_2(-h)
            b1, b2 = (p1 - p2 / c2, p2 / c2) if c2 else (p1, 0.0)
            x = (x + (denoised - uncond)) * math.exp(-h) + (uncond * b1 + previous * b2) * h
        if s[i + 1] > 0 and up > 0:
            x = x + noise_sampler(s[i], s[i + 1]) * up
        previous, previous_down = uncond, down
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_res_multistep_ancestral_cfg_pp(denoise: GuidedDenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float],
                                          *, noise_sampler: NoiseSampler | None = None,
                                          callback: StepCallback | None = None, eta: float = 1.0) -> Tensor:
    return sample_res_multistep_cfg_pp(denoise, x, sigmas, noise_sampler=noise_sampler, callback=callback, eta=eta)


def sample_gradient_estimation_cfg_pp(denoise: GuidedDenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                                      noise_sampler: NoiseSampler | None = None,
                                      callback: StepCallback | None = None, ge_gamma: float = 2.0) -> Tensor:
    """Gradient estimation (see `k_extra.sample_gradient_estimation`) with the unconditional slope, CFG++ style."""
    s = as_floats(sigmas)
    previous: Tensor | None = None
    for i in range(len(s) - 1):
        denoised, uncond = _both(denoise, x, s[i])
        d = (x - uncond) / s[i]
        if s[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * s[i + 1]
            if previous is not None:
                x = x + (d - previous) * ((ge_gamma - 1) * (s[i + 1] - s[i]))
        previous = d
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


CFG_PP_SAMPLERS = {
    "euler_cfg_pp": sample_euler_cfg_pp,
    "euler_ancestral_cfg_pp": sample_euler_ancestral_cfg_pp,
    "dpmpp_2s_ancestral_cfg_pp": sample_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_2m_cfg_pp": sample_dpmpp_2m_cfg_pp,
    "res_multistep_cfg_pp": sample_res_multistep_cfg_pp,
    "res_multistep_ancestral_cfg_pp": sample_res_multistep_ancestral_cfg_pp,
    "gradient_estimation_cfg_pp": sample_gradient_estimation_cfg_pp,
    # not one of KSampler's names: SamplerEulerCFGpp's "alternative" version
    "euler_cfg_pp_alternative": sample_euler_cfg_pp_alternative,
}
