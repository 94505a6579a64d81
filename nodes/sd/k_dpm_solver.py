"""DPM-Solver fast and adaptive (Lu et al. 2022): ComfyUI's dpm_fast and dpm_adaptive.

The single-step DPM-Solver-1/2/3 in noise prediction, stepping in t = -log(sigma); same interface and
parametrisation as `k_samplers`. Its times, step sizes and coefficients are float32 scalars as in ComfyUI: its
inner-stage sigmas (where the UNet is evaluated) come from them, and the adaptive controller's decisions from its
error norm.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from sdgraph.nodes.sd.k_samplers import (DenoiseFn, NoiseSampler, StepCallback, Tensor, _report,
                                         ancestral_step_f32, as_floats, default_noise_sampler)


def _f32(value: float) -> Tensor:
    return torch.tensor(float(value), dtype=torch.float32)


class _DPMSolver:
    def __init__(self, denoise: DenoiseFn, callback: StepCallback | None) -> None:
        self.denoise = denoise
        self.callback = callback

    @staticmethod
    def sigma(t: Tensor) -> Tensor:
        return t.neg().exp()

    def eps(self, cache: dict[str, Tensor], key: str, x: Tensor, t: Tensor) -> Tensor:
        if key not in cache:
            sigma = self.sigma(t)
            cache[key] = (x - self.denoise(x, float(sigma))) / float(sigma)
        return cache[key]

    def order_1(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict[str, Tensor]) -> Tensor:
        h = t_next - t
        return x - self.eps(cache, "eps", x, t) * float(self.sigma(t_next) * h.expm1())

    def order_2(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict[str, Tensor], r1: float = 1 / 2) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - eps * float(self.sigma(s1) * (r1 * h).expm1())
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return (x - eps * float(self.sigma(t_next) * h.expm1())
                - (eps_r1 - eps) * float(self.sigma(t_next) / (2 * r1) * h.expm1()))

    def order_3(self, x: Tensor, t: Tensor, t_next: Tensor, cache: dict[str, Tensor], r1: float = 1 / 3,
                r2: float = 2 / 3) -> Tensor:
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - eps * float(self.sigma(s1) * (r1 * h).expm1())
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - eps * float(self.sigma(s2) * (r2 * h).expm1())
              - (eps_r1 - eps) * float(self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1)))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return (x - eps * float(self.sigma(t_next) * h.expm1())
                - (eps_r2 - eps) * float(self.sigma(t_next) / r2 * (h.expm1() / h - 1)))

    def step(self, order: int, x: Tensor, t: Tensor, t_next: Tensor, cache: dict[str, Tensor]) -> Tensor:
        return (self.order_1, self.order_2, self.order_3)[order - 1](x, t, t_next, cache)


def _dpm_range(s: list[float]) -> tuple[Tensor, Tensor] | None:
    """t = -log(sigma) of the first sigma and of the last non-zero one (ComfyUI's sigma_min), float32."""
    if len(s) < 2:
        return None
    sigma_min = s[-1] if s[-1] != 0 else s[-2]
    if sigma_min <= 0 or s[0] <= 0:
        raise ValueError("DPM-Solver needs non-zero sigma_min and sigma_max")
    return _f32(s[0]).log().neg(), _f32(sigma_min).log().neg()


def sample_dpm_fast(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                    noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None) -> Tensor:
    """DPM-Solver-fast (Lu et al. 2022, Sec. 3.4): as many model evaluations as the schedule has steps, spent on
    third-order steps evenly spaced in t from sigma_max to sigma_min (the last non-zero sigma), the remainder on one
    lower-order step. Only the ends of the schedule are used; the result stays at sigma_min, like ComfyUI's."""
    s = as_floats(sigmas)
    ends = _dpm_range(s)
    if ends is None:
        return x
    t_start, t_end = ends
    nfe = len(s) - 1
    m = nfe // 3 + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    solver = _DPMSolver(denoise, callback)
    for i, order in enumerate(orders):
        cache: dict[str, Tensor] = {}
        t, t_next = ts[i], ts[i + 1]
        sigma = float(solver.sigma(t))
        denoised = x - solver.eps(cache, "eps", x, t) * sigma
        x = solver.step(order, x, t, t_next, cache)
        _report(callback, i, x, denoised, sigma, float(solver.sigma(t_next)))
    return x


class _PIDController:
    """Step-size control for the adaptive solver (a PID controller on the inverse error, soft-limited)."""

    def __init__(self, h: float, pcoeff: float, icoeff: float, dcoeff: float, order: float, accept_safety: float,
                 eps: float = 1e-8) -> None:
        self.h = h
        self.b = ((pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order)
        self.accept_safety = accept_safety
        self.eps = eps
        self.inverse_errors: list[float] = []

    def propose(self, error: float) -> bool:
        inverse = 1 / (error + self.eps)
        if not self.inverse_errors:
            self.inverse_errors = [inverse] * 3
        self.inverse_errors[0] = inverse
        e = self.inverse_errors
        factor = e[0] ** self.b[0] * e[1] ** self.b[1] * e[2] ** self.b[2]
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            e[2], e[1] = e[1], e[0]
        self.h *= factor
        return accept


def sample_dpm_adaptive(denoise: DenoiseFn, x: Tensor, sigmas: Tensor | Sequence[float], *,
                        noise_sampler: NoiseSampler | None = None, callback: StepCallback | None = None,
                        order: int = 3, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05,
                        pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0,
                        accept_safety: float = 0.81, eta: float = 0.0) -> Tensor:
    """DPM-Solver-23 with adaptive steps (Lu et al. 2022, Sec. 3.4 and App. C): each step compares a second- and
    a third-order solution (orders 1 and 2 for `order=2`), the controller accepts or shrinks the step from their
    scaled difference. Only the ends of the schedule are used (sigma_max to the last non-zero sigma); the number
    of model evaluations is the solver's own choice, and the result stays at sigma_min, like ComfyUI's.

    With eta > 0 each step solves to the ancestral sigma_down of its interval and an accepted step adds fresh
    noise making up the rest of the interval's variance (the controller then assumes order 1.5)."""
    if order not in (2, 3):
        raise ValueError(f"dpm_adaptive: order must be 2 or 3, not {order}")
    s = as_floats(sigmas)
    ends = _dpm_range(s)
    if ends is None:
        return x
    if eta:
        noise_sampler = noise_sampler or default_noise_sampler(x)
    t_start, t_end = ends
    solver = _DPMSolver(denoise, callback)
    pid = _PIDController(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    t_s, x_prev, steps = t_start, x, 0
    while t_s < t_end - 1e-5:
        cache: dict[str, Tensor] = {}
        t = torch.minimum(t_end, t_s + pid.h)
        t_to, up = _ancestral_target(solver, t_s, t, t_end, eta) if eta else (t, None)
        sigma = float(solver.sigma(t_s))
        denoised = x - solver.eps(cache, "eps", x, t_s) * sigma
        if order == 2:
            x_low, x_high = solver.order_1(x, t_s, t_to, cache), solver.order_2(x, t_s, t_to, cache)
        else:
            x_low, x_high = solver.order_2(x, t_s, t_to, cache, r1=1 / 3), solver.order_3(x, t_s, t_to, cache)
        delta = torch.maximum(atol_t.to(x.device), rtol_t.to(x.device) * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose(float(error)):
            x_prev, x = x_low, x_high
            if up is not None:
                x = x + noise_sampler(sigma, float(solver.sigma(t))) * float(up)
            t_s = t
        _report(callback, steps, x, denoised, sigma, float(solver.sigma(t_s)))
        steps += 1
    return x


def _ancestral_target(solver: _DPMSolver, t_s: Tensor, t: Tensor, t_end: Tensor, eta: float
                      ) -> tuple[Tensor, Tensor]:
    """The time of the step's sigma_down (not past the end) and the std of the noise that completes the step to
    t, in float32 as ComfyUI computes them."""
    down, _ = ancestral_step_f32(float(solver.sigma(t_s)), float(solver.sigma(t)), eta)
    t_to = torch.minimum(t_end, _f32(down).log().neg())
    return t_to, (solver.sigma(t) ** 2 - solver.sigma(t_to) ** 2) ** 0.5
