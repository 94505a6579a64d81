"""Sampling algorithms in the variance-exploding parametrisation of Karras et al. (2022).

Every sampler has one interface::

    sample(denoise, x, sigmas, *, noise_sampler=None, callback=None) -> x

- `denoise(x, sigma) -> denoised`: the model's estimate of the clean latent at noise level `sigma` (a float);
- `x`: the starting latent, already noised to `sigmas[0]`;
- `sigmas`: the descending noise levels (tensor or sequence of floats), usually ending in 0;
- `noise_sampler(sigma, sigma_next) -> standard normal noise like x` for the stochastic samplers;
- `callback(Step)` once per step (it may raise to stop sampling).

A latent x at noise level sigma is `x0 + sigma * eps`; VP samplers (DDIM, DDPM, DPM-Solver, UniPC, LCM) are written
in this parametrisation too, where they coincide with their published update rules divided by sqrt(alpha_bar).
Single-step samplers live here; the multistep ones (LMS, DPM-Solver++ 2M/2M-SDE/3M-SDE, UniPC) in `k_multistep`;
the rest of ComfyUI's list (Heun++, iPNDM, DEIS, RES, gradient estimation, ER-SDE, SEEDS) in `k_extra`, DPM-Solver
fast/adaptive in `k_dpm_solver`, SA-Solver in `k_sa_solver`, the CFG++ samplers, which also need the
unconditional prediction, in `k_cfgpp`, and LCM with upscaling, which changes the latent's size, in `k_upscale`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

Tensor = torch.Tensor
DenoiseFn = Callable[[Tensor, float], Tensor]
NoiseSampler = Callable[[float, float], Tensor]


@dataclass
class Step:
    """What a sampler reports after each step."""

    i: int
    x: Tensor
    denoised: Tensor
    sigma: float
    sigma_next: float


StepCallback = Callable[[Step], None]
SamplerFn = Callable[..., Tensor]


def as_floats(sigmas: Tensor | Sequence[float]) -> list[float]:
    """Sigmas as Python floats: the step arithmetic then never touches (or syncs with) the device."""
    if isinstance(sigmas, Tensor):
        return sigmas.detach().to("cpu", torch.float64).tolist()
    return [float(s) for s in sigmas]


def default_noise_sampler(x: Tensor, seed: int = 0) -> NoiseSampler:
    """Seeded CPU noise shaped like x, for callers that bring none."""
    generator = torch.Generator("cpu").manual_seed(seed)

    def sample(sigma: float, sigma_next: float) -> Tensor:
        return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)

    return sample


def ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step to sigma_next into a deterministic step to sigma_down plus fresh noise of std sigma_up."""
    if not eta or sigma_next == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
    return math.sqrt(sigma_next ** 2 - up ** 2), up


def ancestral_step_f32(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """`ancestral_step` in float32 as ComfyUI's tensors compute it (where sigma_down sets the UNet's next sigma)."""
    if not eta or sigma_next == 0:
        return sigma_next, 0.0
    s, n = torch.tensor(sigma, dtype=torch.float32), torch.tensor(sigma_next, dtype=torch.float32)
    up = torch.minimum(n, eta * (n ** 2 * (s ** 2 - n ** 2) / s ** 2) ** 0.5)
    return float((n ** 2 - up ** 2) ** 0.5), float(up)


def _report(callback: StepCallback | None, i: int, x: Tensor, denoised: Tensor, s: float, s_next: float) -> None:
    if callback is not None:
        callback(Step(i, x, denoised, s, s_next))


def _euler_to(x: Tensor, denoised: Tensor, sigma: float, target: float) -> Tensor:
    """One Euler step of the probability-flow ODE dx/dsigma = (x - denoised) / sigma, from sigma to target."""
    # x + (x - d) / sigma * (target - sigma) == lerp(d, x, target / sigma): one kernel instead of three
    return torch.lerp(denoised, x, target / sigma)


# ---- first-order samplers -----------------------------------------------------------------------------------


def sample_euler(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                 noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None) -> Tensor:
    """Euler's method on the probability-flow ODE (Karras et al. 2022, Alg. 1 without the second-order step).

    With a discrete-time epsilon model this is also exactly deterministic DDIM (Song et al. 2021)."""
    s = as_floats(sigmas)
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        x = _euler_to(x, denoised, s[i], s[i + 1])
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_euler_ancestral(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                           noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                           eta: float = 1.0) -> Tensor:
    """Euler step to sigma_down, then add noise of std sigma_up (the ancestral sampler of k-diffusion)."""
    s = as_floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        down, up = ancestral_step(s[i], s[i + 1], eta)
        x = _euler_to(x, denoised, s[i], down)
        if s[i + 1] > 0 and up > 0:
            x = x + noise_sampler(s[i], s[i + 1]) * up
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_ddpm(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None) -> Tensor:
    """Ancestral sampling from the DDPM posterior q(x_prev | x_t, x0) (Ho et al. 2020, "fixed_small" variance).

    In the VP parametrisation x_vp = x / sqrt(1 + sigma^2): mean = a * x0 + b * x_vp_t with
    a = sqrt(ab_prev) beta / (1 - ab_t), b = sqrt(alpha) (1 - ab_prev) / (1 - ab_t), where alpha = ab_t / ab_prev."""
    s = as_floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        ab_t, ab_prev = 1.0 / (1.0 + s[i] ** 2), 1.0 / (1.0 + s[i + 1] ** 2)
        alpha = ab_t / ab_prev
        beta = 1.0 - alpha
        a = math.sqrt(ab_prev) * beta / (1.0 - ab_t)
        b = math.sqrt(alpha) * (1.0 - ab_prev) / (1.0 - ab_t)
        x_vp = denoised * a + x * (b * math.sqrt(ab_t))
        if s[i + 1] > 0:
            std = math.sqrt(beta * (1.0 - ab_prev) / (1.0 - ab_t))
            x_vp = x_vp + noise_sampler(s[i], s[i + 1]) * std
        x = x_vp / math.sqrt(ab_prev)
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_lcm(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
               noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None) -> Tensor:
    """Latent Consistency Model multistep sampling (Luo et al. 2023, Alg. 1): jump to the clean estimate, then
    re-noise it to the next level with fresh noise."""
    s = as_floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        x = denoised
        if s[i + 1] > 0:
            x = denoised + noise_sampler(s[i], s[i + 1]) * s[i + 1]
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


# ---- second-order single-step samplers ----------------------------------------------------------------------


def sample_heun(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None) -> Tensor:
    """Heun's second-order method (Karras et al. 2022, Alg. 1); the last step to sigma 0 is a plain Euler step."""
    s = as_floats(sigmas)
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        d = (x - denoised) / s[i]
        dt = s[i + 1] - s[i]
        if s[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = denoise(x_2, s[i + 1])
            d_2 = (x_2 - denoised_2) / s[i + 1]
            x = x + (d + d_2) * (dt / 2)
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def _log_midpoint(a: float, b: float) -> float:
    """The geometric mean of two sigmas, in float32 as ComfyUI computes it (the UNet is given the training
    timestep nearest to it, and a midpoint close to halfway between two must fall on the same side)."""
    log_a, log_b = torch.tensor(a, dtype=torch.float32).log(), torch.tensor(b, dtype=torch.float32).log()
    return float(log_a.lerp(log_b, 0.5).exp())


def sample_dpm_2(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                 noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None) -> Tensor:
    """DPM-Solver-2 (Lu et al. 2022) as a midpoint method in sigma, the midpoint taken in log-sigma."""
    s = as_floats(sigmas)
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        if s[i + 1] == 0:
            x = denoised  # Euler to 0
        else:
            d = (x - denoised) / s[i]
            s_mid = _log_midpoint(s[i], s[i + 1])
            x_2 = x + d * (s_mid - s[i])
            denoised_2 = denoise(x_2, s_mid)
            x = x + (x_2 - denoised_2) * ((s[i + 1] - s[i]) / s_mid)
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_dpm_2_ancestral(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                           noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                           eta: float = 1.0) -> Tensor:
    """DPM-Solver-2 to sigma_down, then fresh noise of std sigma_up."""
    s = as_floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        down, up = ancestral_step(s[i], s[i + 1], eta)
        if down == 0:
            x = denoised
        else:
            d = (x - denoised) / s[i]
            s_mid = _log_midpoint(s[i], down)
            x_2 = x + d * (s_mid - s[i])
            denoised_2 = denoise(x_2, s_mid)
            x = x + (x_2 - denoised_2) * ((down - s[i]) / s_mid)
            x = x + noise_sampler(s[i], s[i + 1]) * up
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_dpmpp_2s_ancestral(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                              noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                              eta: float = 1.0) -> Tensor:
    """DPM-Solver++(2S) (Lu et al. 2022b, Alg. 1, r = 1/2) to sigma_down, then fresh noise of std sigma_up."""
    s = as_floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        down, up = ancestral_step(s[i], s[i + 1], eta)
        if down == 0:
            x = denoised
        else:
            s_mid = _log_midpoint(s[i], down)  # lambda midpoint, lambda = -log sigma
            h = math.log(s[i]) - math.log(down)
            x_2 = x * (s_mid / s[i]) - denoised * math.expm1(-h / 2)
            denoised_2 = denoise(x_2, s_mid)
            x = x * (down / s[i]) - denoised_2 * math.expm1(-h)
        if s[i + 1] > 0 and up > 0:
            x = x + noise_sampler(s[i], s[i + 1]) * up
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_dpmpp_sde(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                     noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                     eta: float = 1.0, r: float = 0.5) -> Tensor:
    """DPM-Solver++ (stochastic, two stages per step with the second at lambda + r h), as in k-diffusion.

    Both stages inject noise; the second stage's noise covers the whole step and contains the first stage's
    (one Brownian path, sigma as its time), so they are drawn as Brownian increments, not independently."""
    s = as_floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        if s[i + 1] == 0:
            x = denoised
        else:
            x = _dpmpp_sde_step(denoise, x, denoised, s[i], s[i + 1], noise_sampler, eta, r)
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def _dpmpp_sde_step(denoise: DenoiseFn, x: Tensor, denoised: Tensor, sigma: float, sigma_next: float,
                    noise_sampler: NoiseSampler, eta: float, r: float) -> Tensor:
    s_mid = _sde_midpoint(sigma, sigma_next, r)
    z_1 = noise_sampler(sigma, s_mid)
    down, up = ancestral_step(sigma, s_mid, eta)
    x_2 = x * (down / sigma) - denoised * math.expm1(math.log(down) - math.log(sigma))
    x_2 = x_2 + z_1 * up
    denoised_2 = denoise(x_2, s_mid)
    fac = 1 / (2 * r)
    denoised_d = torch.lerp(denoised, denoised_2, fac)
    down, up = ancestral_step(sigma, sigma_next, eta)
    x = x * (down / sigma) - denoised_d * math.expm1(math.log(down) - math.log(sigma))
    if getattr(noise_sampler, "brownian", False):  # one path: the whole step's increment contains the first's
        whole = noise_sampler(sigma, sigma_next)
    else:  # independent draws: compose the whole step's increment from the two stages'
        dt_1, dt_2 = abs(sigma - s_mid), abs(s_mid - sigma_next)
        z_2 = noise_sampler(s_mid, sigma_next)
        whole = (z_1 * math.sqrt(dt_1) + z_2 * math.sqrt(dt_2)) / math.sqrt(dt_1 + dt_2)
    return x + whole * up


def _sde_midpoint(sigma: float, sigma_next: float, r: float) -> float:
    """The second stage's sigma, at lambda + r h in half-log-SNR, in float32 as ComfyUI computes it: the
    Brownian tree is queried there, and a different last bit is a different draw."""
    lam_s = torch.tensor(sigma, dtype=torch.float32).log().neg()
    lam_t = torch.tensor(sigma_next, dtype=torch.float32).log().neg()
    return float((lam_s + r * (lam_t - lam_s)).neg().exp())


# ---- the registry -------------------------------------------------------------------------------------------


def _samplers() -> dict[str, SamplerFn]:
    from sdgraph.nodes.sd import k_cfgpp  # noqa: PLC0415 - these modules import this one
    from sdgraph.nodes.sd import k_dpm_solver as dpm  # noqa: PLC0415
    from sdgraph.nodes.sd import k_extra as ex  # noqa: PLC0415
    from sdgraph.nodes.sd import k_multistep as ms  # noqa: PLC0415
    from sdgraph.nodes.sd import k_sa_solver as sa  # noqa: PLC0415
    from sdgraph.nodes.sd import k_upscale  # noqa: PLC0415

    return {
        "euler": sample_euler,
        "euler_ancestral": sample_euler_ancestral,
        "heun": sample_heun,
        "heunpp2": ex.sample_heunpp2,
        "dpm_2": sample_dpm_2,
        "dpm_2_ancestral": sample_dpm_2_ancestral,
        "lms": ms.sample_lms,
        "dpm_fast": dpm.sample_dpm_fast,
        "dpm_adaptive": dpm.sample_dpm_adaptive,
        "dpmpp_2s_ancestral": sample_dpmpp_2s_ancestral,
        "dpmpp_sde": sample_dpmpp_sde,
        "dpmpp_2m": ms.sample_dpmpp_2m,
        "dpmpp_2m_sde": ms.sample_dpmpp_2m_sde,
        "dpmpp_2m_sde_heun": ms.sample_dpmpp_2m_sde_heun,
        "dpmpp_3m_sde": ms.sample_dpmpp_3m_sde,
        "ddpm": sample_ddpm,
        "lcm": sample_lcm,
        "ipndm": ex.sample_ipndm,
        "ipndm_v": ex.sample_ipndm_v,
        "deis": ex.sample_deis,
        "res_multistep": ex.sample_res_multistep,
        "res_multistep_ancestral": ex.sample_res_multistep_ancestral,
        "gradient_estimation": ex.sample_gradient_estimation,
        "er_sde": ex.sample_er_sde,
        "seeds_2": ex.sample_seeds_2,
        "seeds_3": ex.sample_seeds_3,
        "sa_solver": sa.sample_sa_solver,
        "sa_solver_pece": sa.sample_sa_solver_pece,
        "ddim": sample_euler,  # deterministic DDIM is Euler in this parametrisation (see sample_euler)
        "uni_pc": ms.sample_uni_pc,
        "uni_pc_bh2": ms.sample_uni_pc_bh2,
        **k_cfgpp.CFG_PP_SAMPLERS,  # these call denoise.with_uncond (see k_cfgpp)
        **k_upscale.RESIZING_SAMPLERS,  # these take a noise_like (see k_upscale)
    }


# ComfyUI's "_gpu" variants differ only in where the Brownian noise is drawn; here it is always the CPU.
ALIASES = {"dpmpp_sde_gpu": "dpmpp_sde", "dpmpp_2m_sde_gpu": "dpmpp_2m_sde", "dpmpp_3m_sde_gpu": "dpmpp_3m_sde",
           "dpmpp_2m_sde_heun_gpu": "dpmpp_2m_sde_heun"}
# ComfyUI's list, in its order.
SAMPLER_NAMES: tuple[str, ...] = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
    "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2",
    "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)


def get_sampler(name: str) -> SamplerFn:
    table = _samplers()
    key = ALIASES.get(name, name)
    if key not in table:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    return table[key]
