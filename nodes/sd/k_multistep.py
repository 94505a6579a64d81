"""Multistep samplers: they reuse the model's earlier outputs instead of evaluating it more than once per step.

Same interface and parametrisation as `k_samplers` (x = x0 + sigma * eps). Notation: lambda = -log(sigma), the
log signal-to-noise ratio (half of it), and h = lambda_next - lambda, the step in lambda.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from sdgraph.nodes.sd.k_samplers import (DenoiseFn, NoiseSampler, StepCallback, Tensor, _report, as_floats,
                                 default_noise_sampler)


# ---- linear multistep ---------------------------------------------------------------------------------------


def lms_coefficients(s: Sequence[float], i: int, order: int) -> list[float]:
    """Adams-Bashforth weights of the derivatives at s[i], s[i-1], ... for the step s[i] -> s[i+1]: the exact
    integrals of the Lagrange basis polynomials through those sigmas."""
    nodes = [s[i - j] for j in range(order)]
    weights = []
    for j in range(order):
        basis = np.polynomial.Polynomial([1.0])
        for m in range(order):
            if m != j:
                basis = basis * np.polynomial.Polynomial([-nodes[m], 1.0]) / (nodes[j] - nodes[m])
        antiderivative = basis.integ()
        weights.append(float(antiderivative(s[i + 1]) - antiderivative(s[i])))
    return weights


def sample_lms(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
               noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
               order: int = 4) -> Tensor:
    """Linear multistep (Adams-Bashforth) on the probability-flow ODE in sigma, up to `order` derivatives."""
    s = as_floats(sigmas)
    derivatives: list[Tensor] = []  # newest first
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        derivatives.insert(0, (x - denoised) / s[i])
        del derivatives[order:]
        weights = lms_coefficients(s, i, len(derivatives))
        for w, d in zip(weights, derivatives):
            x = x + d * w
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


# ---- DPM-Solver++ multistep ---------------------------------------------------------------------------------


def sample_dpmpp_2m(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                    noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022b, Alg. 2): data prediction, second order from the previous output."""
    s = as_floats(sigmas)
    previous: Tensor | None = None
    h_last = 0.0
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        if s[i + 1] == 0:
            x = denoised
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            target = denoised
            if previous is not None:
                half_over_r = h / (2 * h_last)
                target = denoised * (1 + half_over_r) - previous * half_over_r
            x = x * (s[i + 1] / s[i]) - target * math.expm1(-h)
            h_last = h
        previous = denoised
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_dpmpp_2m_sde(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                        noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                        eta: float = 1.0, solver_type: str = "midpoint") -> Tensor:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022b, App. and Eq. for the SDE variant), with the midpoint second-order
    term, or with `solver_type="heun"` the trapezoidal one (ComfyUI's dpmpp_2m_sde_heun)."""
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun', not {solver_type!r}")
    s = as_floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    previous: Tensor | None = None
    h_last = 0.0
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        if s[i + 1] == 0:
            x = denoised
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            eta_h = eta * h
            blend = -math.expm1(-h - eta_h)
            x = x * (s[i + 1] / s[i] * math.exp(-eta_h)) + denoised * blend
            if previous is not None:
                weight = 0.5 * blend if solver_type == "midpoint" else blend / -(h + eta_h) + 1
                x = x + (denoised - previous) * (weight * h / h_last)
            if eta:
                x = x + noise_sampler(s[i], s[i + 1]) * (s[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)))
            h_last = h
        previous = denoised
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_dpmpp_2m_sde_heun(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                             noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                             eta: float = 1.0) -> Tensor:
    """SDE-DPM-Solver++(2M) with the Heun (trapezoidal) second-order term."""
    return sample_dpmpp_2m_sde(denoise, x, sigmas, noise_sampler=noise_sampler, callback=callback, eta=eta,
                               solver_type="heun")


def sample_dpmpp_3m_sde(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                        noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                        eta: float = 1.0) -> Tensor:
    """Third-order multistep SDE-DPM-Solver++: first and second divided differences of the data predictions."""
    s = as_floats(sigmas)
    noise_sampler = noise_sampler or default_noise_sampler(x)
    history: list[tuple[Tensor, float]] = []  # (denoised, h of the step that followed it), newest first
    for i in range(len(s) - 1):
        denoised = denoise(x, s[i])
        if s[i + 1] == 0:
            x = denoised
        else:
            h = math.log(s[i]) - math.log(s[i + 1])
            h_eta = h * (eta + 1)
            x = x * math.exp(-h_eta) - denoised * math.expm1(-h_eta)
            x = x + _third_order_terms(denoised, history, h, h_eta)
            if eta:
                x = x + noise_sampler(s[i], s[i + 1]) * (s[i + 1] * math.sqrt(-math.expm1(-2 * h * eta)))
            history.insert(0, (denoised, h))
            del history[2:]
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def _third_order_terms(denoised: Tensor, history: list[tuple[Tensor, float]], h: float, h_eta: float
                       ) -> Tensor | float:
    if not history:
        return 0.0
    phi_2 = math.expm1(-h_eta) / h_eta + 1
    d1_0 = (denoised - history[0][0]) * (h / history[0][1])
    if len(history) == 1:
        return d1_0 * phi_2
    r0, r1 = history[0][1] / h, history[1][1] / h
    d1_1 = (history[0][0] - history[1][0]) / r1
    d2 = (d1_0 - d1_1) / (r0 + r1)
    d1 = d1_0 + d2 * r0
    phi_3 = phi_2 / h_eta - 0.5
    return d1 * phi_2 - d2 * phi_3


# ---- UniPC --------------------------------------------------------------------------------------------------


def _unipc_coefficients(rks: list[float], hh: float, variant: str) -> tuple[np.ndarray, np.ndarray, float]:
    """UniPC's linear system (Zhao et al. 2023, Alg. 2/3): R[k][j] = r_j^k and b_k = phi_{k+2}(hh) k! / B(h)."""
    order = len(rks)
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else h_phi_1
    h_phi_k = h_phi_1 / hh - 1
    factorial = 1
    b = []
    for k in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    R = np.array([[r ** (k - 1) for r in rks] for k in range(1, order + 1)], dtype=np.float64)
    return R, np.array(b, dtype=np.float64), b_h


def _unipc_base(x: Tensor, m0: Tensor, sigma_from: float, sigma_to: float) -> tuple[Tensor, float, float]:
    """The first-order (DDIM-like) part of a UniPC step and its step size in -lambda."""
    h = math.log(sigma_from) - math.log(sigma_to)
    hh = -h  # data prediction
    return x * (sigma_to / sigma_from) - m0 * math.expm1(hh), hh, h


def _differences(m0: Tensor, older: list[tuple[Tensor, float]], lam0: float, h: float
                 ) -> tuple[list[float], list[Tensor]]:
    rks, d1s = [], []
    for m, lam in older:
        rk = (lam - lam0) / h
        rks.append(rk)
        d1s.append((m - m0) / rk)
    return rks, d1s


def _unipc_predict(x: Tensor, outputs: list[tuple[Tensor, float]], sigma_from: float, sigma_to: float,
                   order: int, variant: str) -> Tensor:
    """UniP: `outputs` are (data prediction, lambda), newest last; uses the last `order` of them."""
    m0, lam0 = outputs[-1]
    if sigma_to == 0:
        return m0
    base, hh, h = _unipc_base(x, m0, sigma_from, sigma_to)
    if order == 1:
        return base
    rks, d1s = _differences(m0, outputs[-order:-1][::-1], lam0, h)
    R, b, b_h = _unipc_coefficients(rks + [1.0], hh, variant)
    rhos = [0.5] if order == 2 else np.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
    for rho, d in zip(rhos, d1s):
        base = base - d * (b_h * rho)
    return base


def _unipc_correct(x_prev: Tensor, x_pred: Tensor, model_t: Tensor, outputs: list[tuple[Tensor, float]],
                   sigma_from: float, sigma_to: float, order: int, variant: str) -> Tensor:
    """UniC: refine the step just taken with the model's output at its end (which costs no extra evaluation)."""
    m0, lam0 = outputs[-1]
    base, hh, h = _unipc_base(x_prev, m0, sigma_from, sigma_to)
    rks, d1s = _differences(m0, outputs[-order:-1][::-1], lam0, h)
    R, b, b_h = _unipc_coefficients(rks + [1.0], hh, variant)
    rhos = [0.5] if order == 1 else np.linalg.solve(R, b).tolist()
    for rho, d in zip(rhos[:-1], d1s):
        base = base - d * (b_h * rho)
    return base - (model_t - m0) * (b_h * rhos[-1])


def sample_uni_pc(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                  noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                  order: int = 3, variant: str = "bh1") -> Tensor:
    """UniPC (Zhao et al. 2023): multistep predictor UniP-p plus corrector UniC-p, data prediction, with
    lower orders for the first steps (warm-up) and the last ones (the lower_order_final of the reference code)."""
    s = as_floats(sigmas)
    if len(s) > 1 and s[-1] == 0.0:
        s[-1] = 0.001  # ComfyUI's UniPC ends at sigma 0.001 and returns that x, not the clean estimate
    steps = len(s) - 1
    outputs: list[tuple[Tensor, float]] = []
    x_prev: Tensor | None = None
    last_order = 1
    for i in range(steps):
        denoised = denoise(x, s[i])
        lam = -math.log(s[i])
        if x_prev is not None:
            x = _unipc_correct(x_prev, x, denoised, outputs, s[i - 1], s[i], last_order, variant)
        outputs.append((denoised, lam))
        del outputs[:-order]
        this_order = min(order, steps - i, len(outputs))
        x_prev = x
        x = _unipc_predict(x, outputs, s[i], s[i + 1], this_order, variant)
        last_order = this_order
        _report(callback, i, x, denoised, s[i], s[i + 1])
    return x


def sample_uni_pc_bh2(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                      noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None) -> Tensor:
    """UniPC with B(h) = e^h - 1 (the "bh2" variant, recommended for guided sampling with few steps)."""
    return sample_uni_pc(denoise, x, sigmas, callback=callback, variant="bh2")

