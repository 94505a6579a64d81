"""Sigma nodes of the custom-sampling set (ComfyUI's SIGMAS socket): schedules from a model or from explicit
bounds, and the operations that cut, flip or edit a schedule.

A SIGMAS value is a 1-D float64 CPU tensor holding float32 values, as `schedules` returns them: ComfyUI keeps
sigmas in float32, and the SDE samplers' Brownian tree is queried at exactly those numbers.

`sampling` registers these nodes, so they import it only when they run.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from sdgraph.limits import current_limits, refusal
from sdgraph.node import Boolean, Float, Input, Int, Node, Output
from sdgraph.paths import Dirs
from sdgraph.spec import InputSpec
from sdgraph.types import COMBO, FLOAT, MODEL

from sdgraph.nodes.sd.model_sampling import model_sampling_of
from sdgraph.nodes.sd.schedules import SCHEDULER_NAMES

SIGMAS = "SIGMAS"
SCHEDULERS = "sampling/custom_sampling/schedulers"
SIGMA_OPS = "sampling/custom_sampling/sigmas"


def as_sigmas(values: Any, where: str) -> torch.Tensor:
    """A SIGMAS input as a 1-D float64 CPU tensor; anything else is refused naming the input."""
    if not isinstance(values, torch.Tensor):
        raise ValueError(f"{where}: expected SIGMAS (a 1-D tensor of noise levels), got {type(values).__name__}")
    if values.ndim != 1:
        raise ValueError(f"{where}: SIGMAS must be one-dimensional, got shape {tuple(values.shape)}")
    return values.detach().to("cpu", torch.float64)


def float32_sigmas(values: torch.Tensor | list[float], append_zero: bool = True) -> torch.Tensor:
    """Values rounded to float32 (ComfyUI's precision) and held as float64, optionally ending in 0."""
    out = torch.as_tensor(values, dtype=torch.float32).reshape(-1).to(torch.float64)
    return torch.cat([out, out.new_zeros(1)]) if append_zero else out


def choice(name: str, choices: Any) -> InputSpec:
    """A combo declared as ComfyUI declares these: its choices and no default (the first one shows)."""
    return InputSpec(name=name, type=COMBO, section="required", choices=tuple(choices))


def _bound(value: float, where: str) -> float:
    if not value > 0.0:
        raise ValueError(f"{where}: must be above 0 for this schedule, got {value}")
    return float(value)


def _sigma_inputs(rho: float | None = None) -> list:
    inputs = [Int("steps", 20, min=1, max=10000, step=None),
              Float("sigma_max", 14.614642, min=0.0, max=5000.0, step=0.01, round=False),
              Float("sigma_min", 0.0291675, min=0.0, max=5000.0, step=0.01, round=False)]
    if rho is not None:
        inputs.append(Float("rho", rho, min=0.0, max=100.0, step=0.01, round=False))
    return inputs


class BasicScheduler(Node):
    """The sigmas KSampler would sample for a scheduler, steps and denoise (denoise < 1 keeps the last `steps`
    of a longer schedule)."""

    category = SCHEDULERS
    inputs = [Input("model", MODEL), choice("scheduler", SCHEDULER_NAMES),
              Int("steps", 20, min=1, max=10000, step=None), Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)]
    outputs = [Output(SIGMAS)]

    def run(self, model: Any, scheduler: str, steps: int, denoise: float) -> tuple[torch.Tensor]:
        from sdgraph.nodes.sd.sampling import check_schedule, plan_sigmas  # noqa: PLC0415 - it registers us

        check_schedule(self.ctx.limits, "BasicScheduler.denoise", steps, denoise)
        return (plan_sigmas(model, scheduler, steps, denoise).sigmas,)

    @classmethod
    def validate_inputs(cls, dirs: Dirs, steps: int = 20, denoise: float = 1.0, **_: Any) -> str | None:
        from sdgraph.nodes.sd.sampling import check_schedule  # noqa: PLC0415 - it registers us

        return refusal(lambda: check_schedule(current_limits(), "BasicScheduler.denoise", steps, denoise))


class KarrasScheduler(Node):
    """Karras et al.'s schedule between explicit bounds: evenly spaced in sigma^(1/rho)."""

    category = SCHEDULERS
    inputs = _sigma_inputs(rho=7.0)
    outputs = [Output(SIGMAS)]

    def run(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[torch.Tensor]:
        if not rho > 0.0:
            raise ValueError(f"KarrasScheduler.rho: must be above 0, got {rho}")
        ramp = torch.linspace(0, 1, steps, dtype=torch.float32)
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        return (float32_sigmas((hi + ramp * (lo - hi)) ** rho),)


class ExponentialScheduler(Node):
    """Sigmas evenly spaced in log-sigma from sigma_max down to sigma_min."""

    category = SCHEDULERS
    inputs = _sigma_inputs()
    outputs = [Output(SIGMAS)]

    def run(self, steps: int, sigma_max: float, sigma_min: float) -> tuple[torch.Tensor]:
        hi = math.log(_bound(sigma_max, "ExponentialScheduler.sigma_max"))
        lo = math.log(_bound(sigma_min, "ExponentialScheduler.sigma_min"))
        return (float32_sigmas(torch.linspace(hi, lo, steps, dtype=torch.float32).exp()),)


class PolyexponentialScheduler(Node):
    """Log-sigma falling from log(sigma_max) to log(sigma_min) along a power ramp (rho 1: exponential)."""

    category = SCHEDULERS
    inputs = _sigma_inputs(rho=1.0)
    outputs = [Output(SIGMAS)]

    def run(self, steps: int, sigma_max: float, sigma_min: float, rho: float) -> tuple[torch.Tensor]:
        hi = math.log(_bound(sigma_max, "PolyexponentialScheduler.sigma_max"))
        lo = math.log(_bound(sigma_min, "PolyexponentialScheduler.sigma_min"))
        ramp = torch.linspace(1, 0, steps, dtype=torch.float32) ** rho
        return (float32_sigmas(torch.exp(ramp * (hi - lo) + lo)),)


class SDTurboScheduler(Node):
    """SD-Turbo's schedule: the sigmas of training timesteps 999, 899, ..., 99, entered lower for denoise < 1."""

    category = SCHEDULERS
    inputs = [Input("model", MODEL), Int("steps", 1, min=1, max=10, step=None),
              Float("denoise", 1.0, min=0, max=1.0, step=0.01)]
    outputs = [Output(SIGMAS)]

    def run(self, model: Any, steps: int, denoise: float) -> tuple[torch.Tensor]:
        first = 10 - int(10 * denoise)
        timesteps = torch.arange(10, 0, -1) * 100 - 1
        picked = timesteps[first:first + steps]
        return (float32_sigmas(model_sampling_of(model).sigma(picked)),)


class SplitSigmas(Node):
    """Cut a schedule at a step: high_sigmas runs steps [0, step), low_sigmas the rest; both hold the sigma at
    the cut, so the second sampler starts where the first stopped."""

    category = SIGMA_OPS
    inputs = [Input("sigmas", SIGMAS), Int("step", 0, min=0, max=10000, step=None)]
    outputs = [Output(SIGMAS, "high_sigmas"), Output(SIGMAS, "low_sigmas")]

    def run(self, sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        sigmas = as_sigmas(sigmas, "SplitSigmas.sigmas")
        return sigmas[:step + 1], sigmas[step:]


class SplitSigmasDenoise(Node):
    """Cut a schedule so that low_sigmas holds the last round(steps * denoise) steps."""

    category = SIGMA_OPS
    inputs = [Input("sigmas", SIGMAS), Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)]
    outputs = [Output(SIGMAS, "high_sigmas"), Output(SIGMAS, "low_sigmas")]

    def run(self, sigmas: torch.Tensor, denoise: float) -> tuple[torch.Tensor, torch.Tensor]:
        sigmas = as_sigmas(sigmas, "SplitSigmasDenoise.sigmas")
        low_steps = round(max(len(sigmas) - 1, 0) * denoise)
        # a slice [:-0] is empty, as in ComfyUI: with denoise 0 the high part is empty too
        return sigmas[:-low_steps] if low_steps else sigmas[:0], sigmas[-(low_steps + 1):]


class FlipSigmas(Node):
    """Reverse a schedule (ascending noise, for inversion); a leading 0 becomes 0.0001."""

    category = SIGMA_OPS
    inputs = [Input("sigmas", SIGMAS)]
    outputs = [Output(SIGMAS)]

    def run(self, sigmas: torch.Tensor) -> tuple[torch.Tensor]:
        sigmas = as_sigmas(sigmas, "FlipSigmas.sigmas")
        if len(sigmas) == 0:
            return (sigmas,)
        flipped = sigmas.flip(0).clone()
        if flipped[0] == 0:
            flipped[0] = float(torch.tensor(0.0001, dtype=torch.float32))
        return (flipped,)


class SetFirstSigma(Node):
    """Replace the first sigma of a schedule."""

    category = SIGMA_OPS
    inputs = [Input("sigmas", SIGMAS), Float("sigma", 136.0, min=0.0, max=20000.0, step=0.001, round=False)]
    outputs = [Output(SIGMAS)]

    def run(self, sigmas: torch.Tensor, sigma: float) -> tuple[torch.Tensor]:
        sigmas = as_sigmas(sigmas, "SetFirstSigma.sigmas").clone()
        if len(sigmas) == 0:
            raise ValueError("SetFirstSigma.sigmas: the schedule is empty, there is no first sigma to set")
        sigmas[0] = float(torch.tensor(sigma, dtype=torch.float32))
        return (sigmas,)


_SPACINGS = {  # position of the inserted sigmas between two neighbours, for fractions 0..1
    "linear": lambda u: u,
    "cosine": lambda u: torch.sin(u * math.pi / 2),  # dense near the next sigma (the names are ComfyUI's)
    "sine": lambda u: 1 - torch.cos(u * math.pi / 2),  # dense near the current sigma
}


class ExtendIntermediateSigmas(Node):
    """Insert steps - 1 sigmas between each sigma and the next, for the sigmas from start_at_sigma down to
    end_at_sigma (start -1: from the top), spaced linearly or bunched towards one end."""

    category = SIGMA_OPS
    inputs = [Input("sigmas", SIGMAS), Int("steps", 2, min=1, max=100, step=None),
              Float("start_at_sigma", -1.0, min=-1.0, max=20000.0, step=0.01, round=False),
              Float("end_at_sigma", 12.0, min=0.0, max=20000.0, step=0.01, round=False),
              choice("spacing", list(_SPACINGS))]
    outputs = [Output(SIGMAS)]

    def run(self, sigmas: torch.Tensor, steps: int, start_at_sigma: float, end_at_sigma: float, spacing: str
            ) -> tuple[torch.Tensor]:
        sigmas = as_sigmas(sigmas, "ExtendIntermediateSigmas.sigmas").float()  # ComfyUI's float32 arithmetic
        top = torch.tensor(float("inf") if start_at_sigma < 0 else start_at_sigma, dtype=torch.float32)
        bottom = torch.tensor(end_at_sigma, dtype=torch.float32)
        fractions = _SPACINGS[spacing](torch.linspace(0, 1, steps + 1, dtype=torch.float32)[1:-1])
        out: list[torch.Tensor] = []
        for current, following in zip(sigmas[:-1], sigmas[1:]):
            out.append(current.reshape(1))
            if bottom <= current <= top:
                out.append(fractions * (following - current) + current)
        out.append(sigmas[-1:])
        return (float32_sigmas(torch.cat(out), append_zero=False),)


class SamplingPercentToSigma(Node):
    """The sigma reached at a fraction of the sampling process (0 = start, 1 = end); with return_actual_sigma
    the ends are the model's sigma_max and sigma_min instead of the values start/end percent checks use."""

    category = SIGMA_OPS
    inputs = [Input("model", MODEL), Float("sampling_percent", 0.0, min=0.0, max=1.0, step=0.0001),
              Boolean("return_actual_sigma", False)]
    outputs = [Output(FLOAT, "sigma_value")]

    def run(self, model: Any, sampling_percent: float, return_actual_sigma: bool) -> tuple[float]:
        sampling = model_sampling_of(model)
        value = sampling.percent_to_sigma(sampling_percent)
        if return_actual_sigma and sampling_percent <= 0.0:
            value = float(sampling.sigma_max)
        elif return_actual_sigma and sampling_percent >= 1.0:
            value = float(sampling.sigma_min)
        return (value,)


NODES = [BasicScheduler, KarrasScheduler, ExponentialScheduler, PolyexponentialScheduler, SDTurboScheduler,
         SplitSigmas, SplitSigmasDenoise, FlipSigmas, SetFirstSigma, ExtendIntermediateSigmas, SamplingPercentToSigma]
