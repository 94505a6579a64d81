"""More schedulers of the custom-sampling set (SIGMAS from bounds, from a model, or from published tables):
VP, Laplace, Beta with its parameters, Align Your Steps and GITS.

Computed as ComfyUI computes them (float32 where it uses torch, float64 where it uses numpy, then float32), so
the sigmas are its own to the bit. The published tables (Align Your Steps, GITS) are numbers in
`schedule_tables.json`. `sampling` registers these nodes.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdgraph.node import Float, Input, Int, Node, Output
from sdgraph.types import MODEL

from sdgraph.nodes.sd.custom_sigmas import SCHEDULERS, SIGMAS, choice, float32_sigmas
from sdgraph.nodes.sd.model_sampling import model_sampling_of
from sdgraph.nodes.sd.schedules import beta as beta_schedule

TABLES = Path(__file__).with_name("schedule_tables.json")
_BOUND = {"min": 0.0, "max": 5000.0, "step": 0.01, "round": False}


@lru_cache(maxsize=1)
def tables() -> dict[str, Any]:
    return json.loads(TABLES.read_text())


def loglinear_interpolation(sigmas: list[float], count: int) -> np.ndarray:
    """A descending schedule resampled to `count` points: log-sigma interpolated linearly over evenly spaced
    positions (float64)."""
    ascending = np.log(np.asarray(sigmas, dtype=np.float64)[::-1])
    here = np.linspace(0, 1, len(sigmas))
    return np.exp(np.interp(np.linspace(0, 1, count), here, ascending))[::-1].copy()


def _from_table(row: list[float], steps: int, denoise: float, interpolate: bool) -> torch.Tensor:
    """`steps` steps from a table row (resampled in log-sigma when it has another length), keeping the last
    round(steps * denoise) of them and ending in 0; denoise 0 is an empty schedule."""
    if denoise <= 0.0:
        return torch.zeros(0, dtype=torch.float64)
    kept = steps if denoise >= 1.0 else round(steps * denoise)
    values = loglinear_interpolation(row, steps + 1) if interpolate else np.asarray(row, dtype=np.float64)
    values = values[-(kept + 1):].copy()
    values[-1] = 0.0
    return float32_sigmas(torch.from_numpy(values), append_zero=False)


class VPScheduler(Node):
    """The variance-preserving SDE's schedule (Song et al. 2021): sigma(t) = sqrt(e^(beta_d t^2 / 2 + beta_min t)
    - 1) at t evenly spaced from 1 down to eps_s."""

    category = SCHEDULERS
    inputs = [Int("steps", 20, min=1, max=10000, step=None), Float("beta_d", 19.9, **_BOUND),
              Float("beta_min", 0.1, **_BOUND), Float("eps_s", 0.001, min=0.0, max=1.0, step=0.0001, round=False)]
    outputs = [Output(SIGMAS)]

    def run(self, steps: int, beta_d: float, beta_min: float, eps_s: float) -> tuple[torch.Tensor]:
        t = torch.linspace(1, eps_s, steps, dtype=torch.float32)
        return (float32_sigmas(torch.sqrt(torch.special.expm1(beta_d * t ** 2 / 2 + beta_min * t))),)


class LaplaceScheduler(Node):
    """Log-sigma at the quantiles of a Laplace distribution (location mu, scale beta) over evenly spaced
    fractions, clamped to [sigma_min, sigma_max]: denser around e^mu. As in ComfyUI it ends at sigma_min (no
    final 0)."""

    category = SCHEDULERS
    inputs = [Int("steps", 20, min=1, max=10000, step=None),
              Float("sigma_max", 14.614642, **_BOUND), Float("sigma_min", 0.0291675, **_BOUND),
              Float("mu", 0.0, min=-10.0, max=10.0, step=0.1, round=False),
              Float("beta", 0.5, min=0.0, max=10.0, step=0.1, round=False)]
    outputs = [Output(SIGMAS)]

    def run(self, steps: int, sigma_max: float, sigma_min: float, mu: float, beta: float) -> tuple[torch.Tensor]:
        u = torch.linspace(0, 1, steps, dtype=torch.float32)
        side = torch.sign(0.5 - u)
        log_sigma = mu - beta * side * torch.log(1 - 2 * torch.abs(0.5 - u) + 1e-5)  # 1e-5: no log(0) at the ends
        return (float32_sigmas(torch.clamp(torch.exp(log_sigma), min=sigma_min, max=sigma_max), append_zero=False),)


class BetaSamplingScheduler(Node):
    """The model's training sigmas at the quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024);
    below 1 the steps crowd at both ends of the schedule."""

    category = SCHEDULERS
    inputs = [Input("model", MODEL), Int("steps", 20, min=1, max=10000, step=None),
              Float("alpha", 0.6, min=0.0, max=50.0, step=0.01, round=False),
              Float("beta", 0.6, min=0.0, max=50.0, step=0.01, round=False)]
    outputs = [Output(SIGMAS)]

    def run(self, model: Any, steps: int, alpha: float, beta: float) -> tuple[torch.Tensor]:
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not value > 0.0:
                raise ValueError(f"BetaSamplingScheduler.{name}: must be above 0 (a Beta distribution's shape), "
                                 f"got {value}")
        return (beta_schedule(model_sampling_of(model), steps, alpha, beta),)


_DENOISE = Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)


class AlignYourStepsScheduler(Node):
    """Align Your Steps (Sabour et al. 2024): the published 10-step schedules optimised for SD1, SDXL and SVD,
    resampled in log-sigma for other step counts; denoise < 1 keeps the last round(steps * denoise) steps."""

    category = SCHEDULERS
    inputs = [choice("model_type", ["SD1", "SDXL", "SVD"]), Int("steps", 10, min=1, max=10000, step=None),
              _DENOISE]
    outputs = [Output(SIGMAS)]

    def run(self, model_type: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        row = tables()["align_your_steps"][model_type]
        return (_from_table(row, steps, denoise, interpolate=steps + 1 != len(row)),)


class GITSScheduler(Node):
    """GITS (Chen et al. 2024): SD1.5 schedules optimised per step count (2 to 20) for a coefficient between 0.80
    and 1.50, the 20-step one resampled in log-sigma beyond; denoise < 1 keeps the last round(steps * denoise)."""

    category = SCHEDULERS
    inputs = [Float("coeff", 1.2, min=0.8, max=1.5, step=0.05), Int("steps", 10, min=2, max=1000, step=None),
              _DENOISE]
    outputs = [Output(SIGMAS)]

    def run(self, coeff: float, steps: int, denoise: float) -> tuple[torch.Tensor]:
        rows = {float(k): v for k, v in tables()["gits"].items()}.get(round(coeff, 2))
        if rows is None:
            raise ValueError(f"GITSScheduler.coeff: {coeff} has no GITS table; use a multiple of 0.05 from 0.80 to "
                             "1.50")
        if steps <= len(rows) + 1:
            return (_from_table(rows[steps - 2], steps, denoise, interpolate=False),)
        return (_from_table(rows[-1], steps, denoise, interpolate=True),)


NODES = [VPScheduler, LaplaceScheduler, BetaSamplingScheduler, AlignYourStepsScheduler, GITSScheduler]
