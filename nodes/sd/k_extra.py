"""More of ComfyUI's samplers: Heun++, the iPNDM / DEIS multistep family, gradient estimation, the RES multistep
method, ER-SDE and SEEDS.

Same interface and parametrisation as `k_samplers` (x = x0 + sigma * eps, an epsilon-prediction model, so the
half log-SNR is lambda = -log(sigma) and alpha = 1). Where ComfyUI derives a sigma at which the UNet is evaluated
(SEEDS' inner stages), it is computed in float32 as ComfyUI computes it: the UNet is given the training timestep
nearest to it, and one ulp can fall on the other side of a halfway point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from sdgraph.nodes.sd.k_samplers import (DenoiseFn, NoiseSampler, StepCallback, Tensor, _report, as_floats,
                                         ancestral_step, default_noise_sampler)


# ---- Heun++ -------------------------------------------------------------------------------------------------


def sample_heunpp2(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                   noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None) -> Tensor:
    """Heun++: each step averages the slopes at up to three successive sigmas (the current one, the next, the one
    after), weighting the later slopes by their sigma relative to the first; Heun's two-slope average on the
    second-to-last step and Euler on the last."""
    s = as_floats(sigmas)
    end = s[-1]
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        d = (x - denoised) / s[i]
        dt = s[i + 1] - s[i]
        if s[i + 1] == end:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - denoise(x_2, s[i + 1])) / s[i + 1]
            if s[i + 2] == end:
                w2 = s[i + 1] / (2 * s[0])
                slope = d * (1 - w2) + d_2 * w2
            else:
                x_3 = x_2 + d_2 * (s[i + 2] - s[i + 1])
                d_3 = (x_3 - denoise(x_3, s[i + 2])) / s[i + 2]
                w2, w3 = s[i + 1] / (3 * s[0]), s[i + 2] / (3 * s[0])
                slope = d * (1 - w2 - w3) + d_2 * w2 + d_3 * w3
            x = x + slope * dt
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


# ---- Adams-Bashforth-type multistep in sigma: iPNDM, iPNDM-v, DEIS -------------------------------------------


def _ipndm_weights(order: int) -> list[float]:
    """Fixed-step Adams-Bashforth weights (newest slope first)."""
    return {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}[order]


def _ipndm_v_weights(s: list[float], i: int, order: int) -> list[float]:
    """Adams-Bashforth weights for the uneven steps s[i-3] .. s[i] -> s[i+1] (newest slope first)."""
    if order == 1:
        return [1.0]
    h0 = s[i + 1] - s[i]
    h1 = s[i] - s[i - 1]
    w = [(2 + h0 / h1) / 2, -(h0 / h1) / 2]
    if order == 2:
        return w
    h2 = s[i - 1] - s[i - 2]
    t1 = (1 - h0 / (3 * (h0 + h1)) * (h0 * (h0 + h1)) / (h1 * (h1 + h2))) / 2
    if order == 3:
        return [w[0] + t1, w[1] - (1 + h1 / h2) * t1, t1 * h1 / h2]
    h3 = s[i - 2] - s[i - 3]
    ratio = h1 * (h1 + h2) / (h2 * (h2 + h3))
    t2 = ((1 - h0 / (3 * (h0 + h1))) / 2 + (1 - h0 / (2 * (h0 + h1))) * h0 / (6 * (h0 + h1 + h2))) \
        * (h0 * (h0 + h1) * (h0 + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3))
    return [w[0] + t1 + t2,
            w[1] - (1 + h1 / h2) * t1 - (1 + h1 / h2 + ratio) * t2,
            t1 * h1 / h2 + (h1 / h2 + ratio * (1 + h2 / h3)) * t2,
            -t2 * ratio * h1 / h2]


def _multistep_in_sigma(denoise: DenoiseFn, x: Tensor, s: list[float], callback: StepCallback | None,
                        max_order: int, step_weights, final_denoise: bool) -> Tensor:
    """Shared loop: x_next = x + sum_k c_k * d_{i-k} with d the ODE slopes; `step_weights(i, order)` gives the c_k
    (already multiplied by the step), newest first."""
    slopes: list[Tensor] = []  # newest first
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        slopes.insert(0, (x - denoised) / s[i])
        del slopes[max_order:]
        order = min(max_order, i + 1)
        if s[i + 1] <= 0:
            x = denoised if final_denoise else x + slopes[0] * (s[i + 1] - s[i])
        else:
            for c, d in zip(step_weights(i, order), slopes):
                x = x + d * c
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_ipndm(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                 noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                 max_order: int = 4) -> Tensor:
    """Improved PNDM (Zhang & Chen 2023): Adams-Bashforth with the fixed-step weights on the ODE in sigma, lower
    orders while the history fills up; the last step to 0 returns the clean estimate."""
    s = as_floats(sigmas)

    def weights(i: int, order: int) -> list[float]:
        return [w * (s[i + 1] - s[i]) for w in _ipndm_weights(order)]

    return _multistep_in_sigma(denoise, x, s, callback, max_order, weights, final_denoise=True)


def sample_ipndm_v(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                   noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                   max_order: int = 4) -> Tensor:
    """iPNDM with variable-step Adams-Bashforth weights (for uneven sigma steps)."""
    s = as_floats(sigmas)

    def weights(i: int, order: int) -> list[float]:
        return [w * (s[i + 1] - s[i]) for w in _ipndm_v_weights(s, i, order)]

    return _multistep_in_sigma(denoise, x, s, callback, max_order, weights, final_denoise=True)


def _deis_times(s: list[float], eps_s: float = 1e-3, sigma_min: float = 0.002, sigma_max: float = 80.0
                ) -> tuple[Tensor, Tensor, Tensor]:
    """DEIS's VP times for the sigmas, in float32 as ComfyUI computes them: the VP-SDE whose marginals reach
    sigma_min at t = eps_s and sigma_max at t = 1 (beta linear in t, from beta_0 to beta_1)."""
    f32 = torch.float32
    lo = torch.log(torch.tensor(sigma_min, dtype=f32) ** 2 + 1)
    hi = torch.log(torch.tensor(sigma_max, dtype=f32) ** 2 + 1)
    beta_d = 2 * (lo / eps_s - hi) / (eps_s - 1)
    beta_0 = hi - 0.5 * beta_d
    sig = torch.tensor(s, dtype=f32)
    t = ((beta_0 ** 2 + 2 * beta_d * (sig ** 2 + 1).log()).sqrt() - beta_0) / beta_d
    return t, beta_0, beta_d + beta_0


def deis_coefficients(s: list[float], max_order: int, points: int = 10000) -> list[list[float]]:
    """DEIS ("tab" mode, Zhang & Chen 2023): per step, the integrals over [t_i, t_{i+1}] of the exponential
    integrator's weight times each Lagrange basis polynomial through the last `order` times, by a Riemann sum of
    `points` float32 terms as ComfyUI evaluates it. Newest first; empty for first-order steps."""
    t, beta_0, beta_1 = _deis_times(s)
    coeffs: list[list[float]] = []
    for i in range(len(s) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            coeffs.append([])
            continue
        taus = torch.linspace(float(t[i]), float(t[i + 1]), points)
        dtau = (t[i + 1] - t[i]) / points
        alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
        d_log_alpha = -taus * (beta_1 - beta_0) - beta_0  # d/dtau of log(alpha), which is a quadratic in tau
        weight = -0.5 * d_log_alpha / torch.sqrt(alpha * (1 - alpha))
        nodes = [t[i - k] for k in range(order)]
        row = []
        for j in range(order):
            basis = torch.ones((), dtype=torch.float32)
            for k in range(order):
                if k != j:
                    basis = basis * (taus - nodes[k]) / (nodes[j] - nodes[k])
            row.append(float(torch.sum(weight * basis) * dtau))
        coeffs.append(row)
    return coeffs


def sample_deis(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                max_order: int = 3) -> Tensor:
    """Diffusion exponential integrator sampler (DEIS, Zhang & Chen 2023), the tabulated-coefficient variant in
    the VP time of an EDM-range VP-SDE; Euler for the first step and the last step to 0."""
    s = as_floats(sigmas)
    coeffs = deis_coefficients(s, max_order)

    def weights(i: int, order: int) -> list[float]:
        return [s[i + 1] - s[i]] if order == 1 else coeffs[i]

    return _multistep_in_sigma(denoise, x, s, callback, max_order, weights, final_denoise=False)


# ---- gradient estimation ------------------------------------------------------------------------------------


def sample_gradient_estimation(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                               noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                               ge_gamma: float = 2.0) -> Tensor:
    """Euler plus a gradient-estimation correction (Permenter & Yuan 2024): from the second step on, the change of
    the slope since the previous step, scaled by (gamma - 1), is added as an extra Euler term."""
    s = as_floats(sigmas)
    previous: Tensor | None = None
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        d = (x - denoised) / s[i]
        dt = s[i + 1] - s[i]
        if s[i + 1] == 0:
            x = denoised
        else:
            x = x + d * dt
            if previous is not None:
                x = x + (d - previous) * ((ge_gamma - 1) * dt)
        previous = d
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


# ---- RES multistep ------------------------------------------------------------------------------------------


def _phi_1(h: float) -> float:
    return math.expm1(h) / h


def _phi_2(h: float) -> float:
    return (_phi_1(h) - 1) / h


def sample_res_multistep(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                         noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                         eta: float = 0.0) -> Tensor:
    """The second-order refined exponential solver in multistep form (Zhang et al. 2023, "RES", arXiv 2308.02157):
    exponential integrator in lambda with phi_1/phi_2 weights on this and the previous data prediction, the
    previous node placed at the previous step's deterministic target. With eta > 0 each step goes to sigma_down
    and adds noise of std sigma_up (the ancestral variant). Euler for the first step and steps to 0."""
    s = as_floats(sigmas)
    if eta:
        noise_sampler = noise_sampler or default_noise_sampler(x)
    previous: Tensor | None = None
    previous_down = 0.0
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        down, up = ancestral_step(s[i], s[i + 1], eta)
        if down == 0 or previous is None:
            x = torch.lerp(denoised, x, down / s[i])
        else:
            lam, lam_old, lam_next, lam_prev = (-math.log(v) for v in (s[i], previous_down, down, s[i - 1]))
            h = lam_next - lam
            c2 = (lam_prev - lam_old) / h
            p1, p2 = _phi_1(-h), _phi_2(-h)
            b1, b2 = (p1 - p2 / c2, p2 / c2) if c2 else (p1, 0.0)
            x = x * math.exp(-h) + (denoised * b1 + previous * b2) * h
        if s[i + 1] > 0 and up > 0:
            x = x + noise_sampler(s[i], s[i + 1]) * up
        previous, previous_down = denoised, down
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_res_multistep_ancestral(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                                   noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                                   eta: float = 1.0) -> Tensor:
    """RES multistep to sigma_down with fresh noise of std sigma_up (see `sample_res_multistep`)."""
    return sample_res_multistep(denoise, x, sigmas, noise_sampler=noise_sampler, callback=callback, eta=eta)


# ---- ER-SDE -------------------------------------------------------------------------------------------------


def _er_scale(v):
    """ER-SDE's default noise scaling function of lambda (sigma / alpha): v (e^(v^0.3) + 10)."""
    return v * ((v ** 0.3).exp() + 10.0) if isinstance(v, Tensor) else v * (math.exp(v ** 0.3) + 10.0)


@dataclass(frozen=True)
class PowerNoiseScaler:
    """The reverse-time SDE's noise scaling of lambda: lambda^power (power = eta + 1; power 1 is the ODE)."""

    power: float

    def __call__(self, v):
        return v ** self.power


def sample_er_sde(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                  noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                  s_noise: float = 1.0, max_stage: int = 3, noise_scaler: Callable | None = None) -> Tensor:
    """Extended reverse-time SDE solver, VP ER-SDE-Solver-3 (Cui et al. 2023, arXiv 2309.06169), in the
    variable lambda = sigma / alpha (= sigma here): a first-order step, then first and second divided differences
    of the data predictions with the noise-scaling integrals done by a 200-point Riemann sum in float32, as
    ComfyUI does; fresh noise each step. `noise_scaler` is the solver's noise scaling function of lambda (floats
    and float32 tensors; default ER-SDE's own, `PowerNoiseScaler` gives the reverse-time SDE); `max_stage` caps
    the order (1 to 3)."""
    s = as_floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    scale = noise_scaler or _er_scale
    points = 200
    index = torch.arange(0, points, dtype=torch.float32)
    # ComfyUI's lambda_t = exp(-(-log sigma)) in float32: sigma within an ulp
    lam = torch.tensor(s, dtype=torch.float32).log().neg().neg().exp().tolist()
    history: list[Tensor] = []  # data predictions, newest first
    previous_d: Tensor | None = None
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        stage = min(max_stage, i + 1)
        if s[i + 1] == 0:
            x = denoised
        else:
            lam_s, lam_t = lam[i], lam[i + 1]
            alpha_s, alpha_t = s[i] / lam_s, s[i + 1] / lam_t
            r = scale(lam_t) / scale(lam_s)
            x = x * (alpha_t / alpha_s * r) + denoised * (alpha_t * (1 - r))
            if stage >= 2:
                dt = lam_t - lam_s
                step = -dt / points
                pos = lam_t + index * torch.tensor(step, dtype=torch.float32)
                scaled = scale(pos)
                integral = float(torch.sum(1 / scaled) * step)
                d = (denoised - history[0]) / (lam_s - lam[i - 1])
                x = x + d * (alpha_t * (dt + integral * scale(lam_t)))
                if stage >= 3:
                    integral_u = float(torch.sum((pos - lam_s) / scaled) * step)
                    u = (d - previous_d) / ((lam_s - lam[i - 2]) / 2)
                    x = x + u * (alpha_t * (dt ** 2 / 2 + integral_u * scale(lam_t)))
                previous_d = d
            if s_noise > 0:
                spread = lam_t ** 2 - lam_s ** 2 * r ** 2
                std = math.sqrt(spread) if spread > 0 else 0.0
                x = x + noise_sampler(s[i], s[i + 1]) * (alpha_t * s_noise * std)
        history.insert(0, denoised)
        del history[1:]
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


# ---- SEEDS --------------------------------------------------------------------------------------------------


def _stage_sigma(sigma: float, sigma_next: float, r: float) -> float:
    """The sigma at lambda_s + r (lambda_t - lambda_s), in float32 with torch's lerp as ComfyUI computes it."""
    lam_s = torch.tensor(sigma, dtype=torch.float32).log().neg()
    lam_t = torch.tensor(sigma_next, dtype=torch.float32).log().neg()
    return float(torch.lerp(lam_s, lam_t, r).neg().exp())


def _h_phi_1(h: float) -> float:
    return math.expm1(h)


def _h_phi_2(h: float) -> float:
    return (math.expm1(h) - h) / h


def sample_seeds_2(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                   noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                   eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5) -> Tensor:
    """SEEDS-2 (Gonzalez et al. 2023, arXiv 2305.14267), stochastic exponential solver in data prediction with
    one inner stage at lambda + r h; the inner stage's noise carries into the whole step's."""
    s = as_floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    inject = eta > 0 and s_noise > 0
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        if s[i + 1] == 0:
            x = denoised
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            h_eta = h * (eta + 1)
            s_1 = _stage_sigma(s[i], s[i + 1], r)
            x_2 = x * (s_1 / s[i] * math.exp(-r * h * eta)) - denoised * _h_phi_1(-r * h_eta)
            if inject:
                noise = noise_sampler(s[i], s_1) * math.sqrt(-math.expm1(-2 * r * h * eta))
                x_2 = x_2 + noise * (s_1 * s_noise)
            denoised_2 = denoise(x_2, s_1)
            blend = torch.lerp(denoised, denoised_2, 1 / (2 * r))
            x = x * (s[i + 1] / s[i] * math.exp(-h * eta)) - blend * _h_phi_1(-h_eta)
            if inject:
                noise = _carry_noise(noise, noise_sampler, s_1, s[i + 1], (r - 1) * h * eta)
                x = x + noise * (s[i + 1] * s_noise)
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def _carry_noise(noise: Tensor, noise_sampler: NoiseSampler, sigma: float, sigma_next: float, seg: float
                 ) -> Tensor:
    """The stage's accumulated noise decayed by e^seg plus fresh noise completing its variance."""
    return noise * math.exp(seg) + noise_sampler(sigma, sigma_next) * math.sqrt(-math.expm1(2 * seg))


def sample_seeds_3(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                   noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                   eta: float = 1.0, s_noise: float = 1.0, r_1: float = 1 / 3, r_2: float = 2 / 3) -> Tensor:
    """SEEDS-3: two inner stages at lambda + r_1 h and lambda + r_2 h, third order in data prediction."""
    s = as_floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    inject = eta > 0 and s_noise > 0
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        if s[i + 1] == 0:
            x = denoised
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            h_eta = h * (eta + 1)
            s_1, s_2 = _stage_sigma(s[i], s[i + 1], r_1), _stage_sigma(s[i], s[i + 1], r_2)
            x_2 = x * (s_1 / s[i] * math.exp(-r_1 * h * eta)) - denoised * _h_phi_1(-r_1 * h_eta)
            if inject:
                noise = noise_sampler(s[i], s_1) * math.sqrt(-math.expm1(-2 * r_1 * h * eta))
                x_2 = x_2 + noise * (s_1 * s_noise)
            denoised_2 = denoise(x_2, s_1)
            a2 = r_2 / r_1 * _h_phi_2(-r_2 * h_eta)
            a1 = _h_phi_1(-r_2 * h_eta) - a2
            x_3 = x * (s_2 / s[i] * math.exp(-r_2 * h * eta)) - (denoised * a1 + denoised_2 * a2)
            if inject:
                noise = _carry_noise(noise, noise_sampler, s_1, s_2, (r_1 - r_2) * h * eta)
                x_3 = x_3 + noise * (s_2 * s_noise)
            denoised_3 = denoise(x_3, s_2)
            b3 = _h_phi_2(-h_eta) / r_2
            b1 = _h_phi_1(-h_eta) - b3
            x = x * (s[i + 1] / s[i] * math.exp(-h * eta)) - (denoised * b1 + denoised_3 * b3)
            if inject:
                noise = _carry_noise(noise, noise_sampler, s_2, s[i + 1], (r_2 - 1) * h * eta)
                x = x + noise * (s[i + 1] * s_noise)
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x
