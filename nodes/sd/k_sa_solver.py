"""SA-Solver, stochastic Adams (Xue et al. 2023, arXiv 2309.05019): ComfyUI's sa_solver and sa_solver_pece.

In data prediction: a multistep predictor and corrector whose weights integrate the Lagrange basis through the
last data predictions in lambda against the SDE's exponential kernel; same interface and parametrisation as
`k_samplers`. The coefficients are solved in float32 as ComfyUI solves them (a Vandermonde system,
ill-conditioned enough that float64 would be another answer at the 1e-5 level).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from sdgraph.nodes.sd.k_samplers import (DenoiseFn, NoiseSampler, StepCallback, Tensor, _report, as_floats,
                                         default_noise_sampler)


def sa_tau_interval(model_sampling: Any = None, start_percent: float = 0.2, end_percent: float = 0.8
                    ) -> tuple[float, float]:
    """The sigmas reached at two fractions of a model sampling's schedule (its percent_to_sigma: percent 0 is
    above every sigma, percent 1 is sigma 0; SD's when None): by default the stochastic interval, 20% to 80%."""
    if model_sampling is None:
        from sdgraph.nodes.sd.model_objects import sd_alphas_cumprod  # noqa: PLC0415
        from sdgraph.nodes.sd.model_sampling import discrete_sampling  # noqa: PLC0415

        model_sampling = discrete_sampling(sd_alphas_cumprod())
    return model_sampling.percent_to_sigma(start_percent), model_sampling.percent_to_sigma(end_percent)


def _exponential_moments(lam_s: Tensor, lam_t: Tensor, order: int, tau: float) -> Tensor:
    """(1 + tau^2) * integral_s^t e^((1 + tau^2)(x - t)) x^p dx for p < order, by repeated integration by parts:
    a lower-triangular combination of t^p - s^p e^(-(1 + tau^2) h), float32."""
    k = 1 + tau ** 2
    p = torch.arange(order, dtype=torch.float32)
    ends = lam_t ** p - lam_s ** p * (-k * (lam_t - lam_s)).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_fact = (p + 1).lgamma()
    log_weight = log_fact.unsqueeze(1) - log_fact.unsqueeze(0)
    if tau > 0:
        log_weight = log_weight - depth * math.log(k)
    sign = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (log_weight.exp() * sign).tril() @ ends


def _solve(matrix: Tensor, rhs: Tensor) -> Tensor:
    """ComfyUI's float32 solve; where nodes lie so close that float32 elimination finds a zero pivot (which
    depends on the CPU's rounding: ComfyUI itself fails there), the float64 answer instead of a crash."""
    try:
        return torch.linalg.solve(matrix, rhs)
    except torch.linalg.LinAlgError:
        return torch.linalg.solve(matrix.double(), rhs.double()).to(matrix.dtype)


def _sa_weights(sigma_next: float, nodes: Tensor, lam_s: Tensor, lam_t: Tensor, tau: float,
               simple_order_2: bool = False, corrector: bool = False) -> list[float]:
    """Weights of the data predictions at `nodes` (lambdas, oldest first) for a step from lam_s to lam_t."""
    if simple_order_2 and nodes.shape[0] == 2:
        return _simple_order_2_weights(sigma_next, nodes, lam_s, lam_t, tau, corrector)
    moments = _exponential_moments(lam_s, lam_t, nodes.shape[0], tau)
    integrals = _solve(torch.vander(nodes, nodes.shape[0], increasing=True).T, moments)
    alpha_t = torch.tensor(sigma_next, dtype=torch.float32) * lam_t.exp()
    return (alpha_t * integrals).tolist()


def _simple_order_2_weights(sigma_next: float, nodes: Tensor, lam_s: Tensor, lam_t: Tensor, tau: float,
                            corrector: bool) -> list[float]:
    """The paper's simplified second-order weights (App. D): the kernel's integral split between the two
    predictions by a trapezoid (corrector) or a linear extrapolation from the older node (predictor)."""
    k = 1 + tau ** 2
    h = lam_t - lam_s
    alpha_t = torch.tensor(sigma_next, dtype=torch.float32) * lam_t.exp()
    whole = alpha_t * (-h * k).expm1().neg()
    if corrector:
        newer = alpha_t * (0.5 * k * h)
        return [float(whole - newer), float(newer)]
    older = alpha_t * (0.5 * k * h ** 2) / (nodes[-2] - lam_s)
    return [float(older), float(whole - older)]


def sample_sa_solver(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                     noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                     tau_interval: tuple[float, float] | None = None, eta: float = 1.0, predictor_order: int = 3,
                     corrector_order: int = 4, pece: bool = False, simple_order_2: bool = False) -> Tensor:
    """SA-Solver: each step corrects the state the last predictor reached with the model's output there (no extra
    evaluation; with `pece` the corrected state is evaluated again), then predicts the next one, adding noise where
    tau > 0. tau is `eta` for steps landing inside `tau_interval` = (start, end) sigmas (default: SD's schedule at
    20%, 80%) and 0 elsewhere; eta 0 is the ODE solver. `simple_order_2` replaces the two-prediction weights with
    the paper's simplified ones. A corrector order 0 skips the corrector."""
    s = as_floats(sigmas)
    if len(s) < 2:
        return x
    noise_sampler = noise_sampler or default_noise_sampler(x)
    start, end = tau_interval or sa_tau_interval()
    lam = torch.tensor(s, dtype=torch.float32).log().neg()
    history = max(predictor_order, corrector_order)
    to_zero = s[-1] == 0
    x_pred, h, tau, noise = x, 0.0, 0.0, None
    outputs: list[Tensor] = []  # oldest first
    for i in range(len(s) - 1):
        denoised = denoise(x_pred, s[i])
        outputs.append(denoised)
        del outputs[:-history]
        p_order = min(predictor_order, len(outputs))
        c_order = 0 if i == 0 or (s[i + 1] == 0 and not pece) else min(corrector_order, len(outputs))
        if to_zero:
            p_order = min(p_order, len(s) - 2 - i)
            c_order = min(c_order, len(s) - 1 - i)
        if c_order == 0:
            x = x_pred
        else:
            weights = _sa_weights(s[i], lam[i - c_order + 1:i + 1], lam[i - 1], lam[i], tau, simple_order_2, True)
            x = x * (s[i] / s[i - 1] * math.exp(-(tau ** 2) * h))
            for w, m in zip(weights, outputs[-c_order:]):
                x = x + m * w
            if noise is not None:
                x = x + noise  # the previous predictor's noise
            if pece:
                denoised = denoise(x, s[i])
                outputs[-1] = denoised
        if s[i + 1] == 0:
            x = denoised
        else:
            tau = eta if eta > 0 and start >= s[i + 1] >= end else 0.0
            weights = _sa_weights(s[i + 1], lam[i - p_order + 1:i + 1], lam[i], lam[i + 1], tau, simple_order_2)
            h = float(lam[i + 1] - lam[i])
            x_pred = x * (s[i + 1] / s[i] * math.exp(-(tau ** 2) * h))
            for w, m in zip(weights, outputs[-p_order:]):
                x_pred = x_pred + m * w
            noise = None
            if tau > 0:
                noise = noise_sampler(s[i], s[i + 1]) * (s[i + 1] * math.sqrt(-math.expm1(-2 * tau ** 2 * h)))
                x_pred = x_pred + noise
        _report(callback, i, x_pred if s[i + 1] else x, denoised, s[i], s[i + 1])
    return x


def sample_sa_solver_pece(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                          noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                          tau_interval: tuple[float, float] | None = None, eta: float = 1.0,
                          predictor_order: int = 3, corrector_order: int = 4, simple_order_2: bool = False) -> Tensor:
    """SA-Solver in predict-evaluate-correct-evaluate mode (one more model evaluation per step)."""
    return sample_sa_solver(denoise, x, sigmas, noise_sampler=noise_sampler, callback=callback,
                            tau_interval=tau_interval, eta=eta, predictor_order=predictor_order,
                            corrector_order=corrector_order, pece=True, simple_order_2=simple_order_2)
