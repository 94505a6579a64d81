"""Sigma schedules by the names node-graph users know, computed from a model's training noise schedule.

A schedule is a descending list of `steps + 1` noise levels (sigmas, in the variance-exploding parametrisation
sigma = sqrt((1 - alpha_bar) / alpha_bar)) ending in 0. `DiscreteSchedule` maps sigmas to the model's training
timesteps and back (log-sigma interpolation, so fractional timesteps are allowed).

The schedules are computed as ComfyUI computes them, in float32 from the float32 training sigmas, so they are the
same numbers bit for bit (returned as float64 tensors holding those float32 values). The SDE samplers need that:
their Brownian tree is queried at the sigmas, and one ulp apart is another draw.
"""
from __future__ import annotations

import bisect
import math
import weakref
from typing import Any, Callable

import torch


class DiscreteSchedule:
    """The 1000 training noise levels of a discrete-time diffusion model and the sigma <-> timestep maps."""

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        ab = alphas_cumprod.detach().to("cpu", torch.float64)
        self._set_sigmas(((1.0 - ab) / ab).sqrt())

    @classmethod
    def from_sigmas(cls, sigmas: torch.Tensor) -> "DiscreteSchedule":
        """A schedule of given ascending training sigmas. As ComfyUI's `set_sigmas`, the float32 log-sigmas are
        taken in the dtype given: float64 sigmas (a training schedule) or float32 ones (a distilled subset)."""
        schedule = cls.__new__(cls)
        schedule._set_sigmas(sigmas.detach().to("cpu"))
        return schedule

    def _set_sigmas(self, sigmas: torch.Tensor) -> None:
        self.sigmas = sigmas.to(torch.float64)  # ascending with the timestep
        self.log_sigmas: list[float] = self.sigmas.log().tolist()
        self.sigma_min = float(self.sigmas[0])
        self.sigma_max = float(self.sigmas[-1])
        self.sigmas32 = sigmas.float()
        self.log_sigmas32 = sigmas.log().float()

    def sigma32(self, t: torch.Tensor) -> torch.Tensor:
        """`sigma` in float32 arithmetic, for float32 timesteps."""
        t = t.float().clamp(0, self.num_timesteps - 1)
        w = t.frac()
        return ((1 - w) * self.log_sigmas32[t.floor().long()] + w * self.log_sigmas32[t.ceil().long()]).exp()

    @property
    def num_timesteps(self) -> int:
        return len(self.log_sigmas)

    def sigma(self, t: float) -> float:
        """The sigma at a (possibly fractional) timestep, interpolated in log-sigma."""
        t = min(max(float(t), 0.0), self.num_timesteps - 1.0)
        low = int(math.floor(t))
        high = min(low + 1, self.num_timesteps - 1)
        w = t - low
        return math.exp((1.0 - w) * self.log_sigmas[low] + w * self.log_sigmas[high])

    def timestep(self, sigma: float) -> float:
        """The (fractional) timestep whose sigma is `sigma`, by log-sigma interpolation; clamped to the range."""
        log_sigma = math.log(max(float(sigma), 1e-12))
        ls = self.log_sigmas
        high = bisect.bisect_left(ls, log_sigma)
        if high <= 0:
            return 0.0
        if high >= len(ls):
            return float(len(ls) - 1)
        low = high - 1
        return low + (log_sigma - ls[low]) / (ls[high] - ls[low])

    def nearest_timestep(self, sigma: float) -> int:
        """The training timestep whose log-sigma is closest to sigma's: what the UNet is given. Compared in
        float32 as ComfyUI compares, so a sigma almost halfway between two timesteps picks the same one."""
        log_sigma = torch.tensor(max(float(sigma), 1e-12), dtype=torch.float32).log()
        return int((log_sigma - self.log_sigmas32).abs().argmin())

    def percent_to_sigma(self, percent: float) -> float:
        """ComfyUI's percent of the sampling process (0 = start) as the sigma where it is reached."""
        if percent <= 0.0:
            return float("inf")
        if percent >= 1.0:
            return 0.0
        return self.sigma((1.0 - percent) * (self.num_timesteps - 1))

    def sigma_to_percent(self, sigma: float) -> float:
        return 1.0 - self.timestep(sigma) / (self.num_timesteps - 1)


# keyed by id: tensors compare elementwise, so they cannot be dictionary keys themselves
_CACHE: dict[int, tuple["weakref.ref[torch.Tensor]", DiscreteSchedule]] = {}


def schedule_of(alphas_cumprod: torch.Tensor) -> DiscreteSchedule:
    """The DiscreteSchedule of a model's alphas_cumprod, built once per tensor (it is never modified in place)."""
    key = id(alphas_cumprod)
    found = _CACHE.get(key)
    if found is not None and found[0]() is alphas_cumprod:
        return found[1]
    schedule = DiscreteSchedule(alphas_cumprod)
    _CACHE[key] = (weakref.ref(alphas_cumprod, lambda _ref, key=key: _CACHE.pop(key, None)), schedule)
    return schedule


# ---- schedules: (model sampling, steps) -> sigmas [steps + 1], float32 values in float64, last 0 ----------
#
# `ms` is a model sampling (`nodes.sd.model_sampling`, ComfyUI's ModelSampling shape): `sigmas` its float32 table
# (ascending), `sigma_min` / `sigma_max`, and `timestep(sigma)` / `sigma(timestep)` on tensors. A bare
# DiscreteSchedule stands for the epsilon-prediction sampling of its sigmas.


def _finish(sigmas: list[float] | torch.Tensor, append_zero: bool = True) -> torch.Tensor:
    values = torch.as_tensor(sigmas, dtype=torch.float32).to(torch.float64).tolist()
    return torch.tensor(values + ([0.0] if append_zero else []), dtype=torch.float64)


def _timestep_spaced(ms: Any, steps: int, drop_last: bool) -> torch.Tensor:
    start, end = float(ms.timestep(ms.sigma_max)), float(ms.timestep(ms.sigma_min))
    if drop_last:  # sgm_uniform: steps + 1 points, the last one (t = 0) replaced by sigma 0
        return _finish(ms.sigma(torch.linspace(start, end, steps + 1, dtype=torch.float32)[:-1]))
    if math.isclose(float(ms.sigma(torch.tensor(end))), 0.0, abs_tol=1e-5):  # zero terminal SNR at the bottom
        return _finish(ms.sigma(torch.linspace(start, end, steps + 1, dtype=torch.float32)), append_zero=False)
    return _finish(ms.sigma(torch.linspace(start, end, steps, dtype=torch.float32)))


def normal(ms: Any, steps: int) -> torch.Tensor:
    """Timesteps evenly spaced from the last training timestep to the first (diffusers' "linspace")."""
    return _timestep_spaced(ms, steps, drop_last=False)


def sgm_uniform(ms: Any, steps: int) -> torch.Tensor:
    """`steps + 1` evenly spaced timesteps with the last one replaced by sigma 0 (the SGM/SDXL-Turbo spacing)."""
    return _timestep_spaced(ms, steps, drop_last=True)


def _range32(ms: Any) -> tuple[float, float]:
    """sigma_min and sigma_max as the float32 table holds them."""
    return float(ms.sigma_min), float(ms.sigma_max)


def simple(ms: Any, steps: int) -> torch.Tensor:
    """Every (table length / steps)-th training sigma, counted down from the top, truncating the stride."""
    n = len(ms.sigmas)
    stride = n / steps
    return _finish([float(ms.sigmas[n - 1 - int(i * stride)]) for i in range(steps)])


def ddim_uniform(ms: Any, steps: int) -> torch.Tensor:
    """DDIM's "leading" timesteps with offset 1: 1, 1 + k, 1 + 2k, ... (k = 1000 // steps), reversed."""
    n = len(ms.sigmas)
    terminal = math.isclose(float(ms.sigmas[1]), 0.0, abs_tol=1e-5)  # a table whose second level is 0 already
    stride = max(n // (steps + 1 if terminal else steps), 1)
    picked = [float(ms.sigmas[t]) for t in range(1, n, stride)]
    return _finish(picked[::-1], append_zero=not terminal)


def karras(ms: Any, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022), eq. 5: sigmas evenly spaced in sigma^(1/rho)."""
    sigma_min, sigma_max = _range32(ms)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float32)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _finish((hi + ramp * (lo - hi)) ** rho)


def exponential(ms: Any, steps: int) -> torch.Tensor:
    """Sigmas evenly spaced in log-sigma from sigma_max to sigma_min."""
    sigma_min, sigma_max = _range32(ms)
    return _finish(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float32).exp())


def beta(ms: Any, steps: int, alpha: float = 0.6, beta_: float = 0.6) -> torch.Tensor:
    """Timesteps at the quantiles of a Beta(0.6, 0.6) distribution (Lee et al. 2024), denser at both ends."""
    total = len(ms.sigmas) - 1
    quantiles = [1.0 - i / steps for i in range(steps)]
    picked: list[float] = []
    last = -1
    for q in quantiles:
        t = int(round(_beta_ppf(q, alpha, beta_) * total))
        if t != last:
            picked.append(float(ms.sigmas[t]))
        last = t
    return _finish(picked)


def kl_optimal(ms: Any, steps: int) -> torch.Tensor:
    """The KL-optimal schedule (Sabour et al. 2024): evenly spaced in arctan(sigma)."""
    sigma_min, sigma_max = _range32(ms)
    ramp = torch.arange(steps, dtype=torch.float32) / max(steps - 1, 1)
    return _finish((ramp * math.atan(sigma_min) + (1 - ramp) * math.atan(sigma_max)).tan())


def linear_quadratic(ms: Any, steps: int, threshold: float = 0.025) -> torch.Tensor:
    """The linear-then-quadratic schedule (from Mochi): over the first half of the steps the noise fraction 1 - sigma /
    sigma_max grows linearly to `threshold`, over the second half along a parabola that reaches 1 (sigma 0) with a
    slope continuous at the joint."""
    sigma_max = torch.tensor(_range32(ms)[1], dtype=torch.float32)
    if steps == 1:
        return _finish(torch.tensor([1.0, 0.0], dtype=torch.float32) * sigma_max, append_zero=False)
    ramp = steps // 2
    rest = steps - ramp
    surplus = ramp - threshold * steps  # how far the ramp's slope, kept up, would fall short of 1 at the end
    a = surplus / (ramp * rest ** 2)
    b = threshold / ramp - 2 * surplus / rest ** 2
    fractions = [i * threshold / ramp for i in range(ramp)]
    fractions += [a * i * i + b * i + a * ramp ** 2 for i in range(ramp, steps)]
    kept = torch.tensor([1.0 - f for f in fractions] + [0.0], dtype=torch.float32)
    return _finish(kept * sigma_max, append_zero=False)


def _beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse CDF of Beta(a, b); scipy's when installed, else bisection on a numerically integrated CDF."""
    try:
        from scipy.special import betaincinv
    except ImportError:  # pragma: no cover - scipy is present wherever diffusers' LMS scheduler works
        return _bisect(lambda x: _beta_cdf(x, a, b), q)
    return float(betaincinv(a, b, q))


def _beta_cdf(x: float, a: float, b: float, n: int = 4096) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > 0.5:  # integrate on the smooth half only: I_x(a, b) = 1 - I_{1-x}(b, a)
        return 1.0 - _beta_cdf(1.0 - x, b, a, n)
    # substitute s = u^(1/a) so that s^(a-1) ds = du / a has no singularity at 0
    u = torch.linspace(0.0, x ** a, n + 1, dtype=torch.float64)
    f = (1.0 - u ** (1.0 / a)) ** (b - 1.0) / a
    partial = torch.trapezoid(f, u)
    return float(partial / math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))


def _bisect(f: Callable[[float], float], target: float, iters: int = 60) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return (lo + hi) / 2


# In ComfyUI's order: the order of the scheduler combo that clients show.
SCHEDULES: dict[str, Callable[[Any, int], torch.Tensor]] = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": karras,
    "exponential": exponential,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}
SCHEDULER_NAMES: tuple[str, ...] = tuple(SCHEDULES)


def compute_sigmas(sampling: Any, name: str, steps: int) -> torch.Tensor:
    """The float64 CPU sigmas [steps + 1] of the named schedule (fewer when a schedule merges duplicates), for a
    model sampling (or a DiscreteSchedule, sampled as epsilon prediction)."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
    if steps <= 0:
        return torch.zeros(0, dtype=torch.float64)
    if isinstance(sampling, DiscreteSchedule):
        from sdgraph.nodes.sd.model_sampling import DiscreteSampling  # noqa: PLC0415 - it imports this module

        sampling = DiscreteSampling(sampling)
    return SCHEDULES[name](sampling, steps)
