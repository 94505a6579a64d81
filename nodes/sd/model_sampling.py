"""A MODEL's model sampling: how noise levels (sigmas) map to the UNet's timesteps and how the UNet's input is
scaled and its output read. It has ComfyUI's ModelSampling shape, so `get_model_object("model_sampling")` answers
what ComfyUI's does and ModelSamplingDiscrete & co. replace it with an object patch.

A model sampling is a family of noise levels and a parametrisation (`Prediction`):

- `DiscreteSampling`: a training schedule's 1000 sigmas; the UNet gets the timestep whose log-sigma is nearest.
  `zero_terminal_snr` rescales them so that the last level is (almost) pure noise.
- `DistilledSampling`: the 50 levels a latent-consistency model was distilled on (every 20th).
- `ContinuousEDMSampling` (timestep 0.25 log sigma), `ContinuousVSampling` (timestep 2/pi atan sigma),
  `CosmosRFlowSampling` (timestep sigma / (sigma + 1)): continuous levels between sigma_min and sigma_max, with a
  1000-entry log-spaced table for the schedulers.
- predictions: eps, v_prediction, edm, x0, img_to_img, lcm, cosmos_rflow (`PREDICTIONS`).

The API is ComfyUI's: `sigmas` / `log_sigmas` (float32 tables, ascending), `sigma_min` / `sigma_max` (0-d float32),
`sigma_data`, `timestep(sigma)` and `sigma(timestep)` on tensors, `percent_to_sigma(percent)`,
`calculate_input(sigma, noise)`, `calculate_denoised(sigma, model_output, model_input)`,
`noise_scaling(sigma, noise, latent_image, max_denoise)`, `inverse_noise_scaling(sigma, latent)`. sdgraph adds
`sigma_to_percent(sigma)` (where ControlNet windows are compared) and `unet_timestep(sigma)` (a float's timestep).

The sigma of the last four may be a Python float, one level for the whole batch (the samplers' hot path, computed
in scalar arithmetic as sdgraph always has, so an unpatched model samples the numbers it did before), or a tensor,
0-d or one level per batch item, as ComfyUI passes them.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch

from sdgraph.nodes.sd.schedules import DiscreteSchedule, schedule_of

Tensor = torch.Tensor
Sigma = float | Tensor

# what ComfyUI's percent_to_sigma answers for percent 0: a sigma above any schedule's
PERCENT_ZERO_SIGMA = 999999999.9
# ComfyUI's alpha_bar for the last level of a zero-terminal-SNR schedule (0 would be an infinite sigma; this is
# sigma ~ 4519)
ZSNR_LAST_ALPHA_BAR = 4.8973451890853435e-08


def _scalar(sigma: Sigma) -> float | None:
    return float(sigma) if isinstance(sigma, (int, float)) else None


def _per_item(sigma: Tensor, ndim: int) -> Tensor:
    """One level as a 0-d tensor, one per batch item as [B, 1, ...] (broadcasting over a tensor of `ndim` dims)."""
    if sigma.numel() == 1:
        return sigma.reshape(())
    return sigma.reshape(sigma.shape[:1] + (1,) * (ndim - 1))


# ---- parametrisations -------------------------------------------------------------------------------------


class Prediction:
    """Epsilon prediction: the UNet sees x / sqrt(sigma^2 + sigma_data^2) and predicts the noise, x0 = x - sigma eps.
    Initial noise is scaled by sigma (sqrt(1 + sigma^2) from the top of the schedule) and added to the latent."""

    name = "eps"

    def calculate_input(self, ms: "ModelSampling", sigma: Sigma, noise: Tensor) -> Tensor:
        sd, s = ms.sigma_data, _scalar(sigma)
        if s is not None:
            return noise * (1.0 / math.sqrt(s * s + sd * sd))
        level = _per_item(sigma, noise.ndim)
        return noise / (level ** 2 + sd ** 2) ** 0.5

    def calculate_denoised(self, ms: "ModelSampling", sigma: Sigma, model_output: Tensor,
                           model_input: Tensor) -> Tensor:
        s = _scalar(sigma)
        if s is not None:
            return torch.add(model_input, model_output, alpha=-s)
        return model_input - model_output * _per_item(sigma, model_output.ndim)

    def noise_scaling(self, ms: "ModelSampling", sigma: Sigma, noise: Tensor, latent_image: Tensor,
                      max_denoise: bool = False) -> Tensor:
        s = _scalar(sigma)
        if s is not None:
            return torch.add(latent_image, noise, alpha=math.sqrt(1.0 + s ** 2) if max_denoise else s)
        level = _per_item(sigma, noise.ndim)
        return noise * (torch.sqrt(1.0 + level ** 2) if max_denoise else level) + latent_image

    def inverse_noise_scaling(self, ms: "ModelSampling", sigma: Sigma, latent: Tensor) -> Tensor:
        return latent

    def zero_estimate_output(self, ms: "ModelSampling", sigma: float, x: Tensor) -> Tensor:
        """The UNet output whose x0 estimate is 0 at (x, sigma > 0): what a side where no entry weighs answers."""
        return x / sigma


class VPrediction(Prediction):
    """v-prediction (SD 2.x 768-v): x0 = x sigma_data^2 / (sigma^2 + sigma_data^2) - v sigma sigma_data /
    sqrt(sigma^2 + sigma_data^2)."""

    name = "v_prediction"
    sign = -1.0

    def calculate_denoised(self, ms: "ModelSampling", sigma: Sigma, model_output: Tensor,
                           model_input: Tensor) -> Tensor:
        sd, s = ms.sigma_data, _scalar(sigma)
        if s is not None:
            c = 1.0 / math.sqrt(s * s + sd * sd)
            return torch.add(model_input * (sd * sd * (c * c)), model_output, alpha=self.sign * s * sd * c)
        level = _per_item(sigma, model_output.ndim)
        skip = model_input * sd ** 2 / (level ** 2 + sd ** 2)
        return skip + self.sign * model_output * level * sd / (level ** 2 + sd ** 2) ** 0.5

    def zero_estimate_output(self, ms: "ModelSampling", sigma: float, x: Tensor) -> Tensor:
        sd = ms.sigma_data
        return x / (-self.sign * sigma * math.sqrt(sigma * sigma + sd * sd) / sd)


class EdmPrediction(VPrediction):
    """EDM's preconditioning (Karras et al. 2022): as v-prediction with the output term's sign flipped."""

    name = "edm"
    sign = 1.0


class X0Prediction(Prediction):
    """The UNet predicts x0 itself."""

    name = "x0"

    def calculate_denoised(self, ms: "ModelSampling", sigma: Sigma, model_output: Tensor,
                           model_input: Tensor) -> Tensor:
        return model_output

    def zero_estimate_output(self, ms: "ModelSampling", sigma: float, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


class ImgToImgPrediction(X0Prediction):
    """x0 prediction from the unscaled input (image-to-image models that take the noisy latent as it is)."""

    name = "img_to_img"

    def calculate_input(self, ms: "ModelSampling", sigma: Sigma, noise: Tensor) -> Tensor:
        return noise


class LcmPrediction(Prediction):
    """Latent consistency models: the epsilon estimate of x0 mixed with the input by the consistency boundary
    conditions, c_skip = sd^2 / (t'^2 + sd^2), c_out = t' / sqrt(t'^2 + sd^2), with t' = 10 timestep, sd = 0.5."""

    name = "lcm"
    data_std = 0.5
    timestep_scaling = 10.0

    def calculate_denoised(self, ms: "ModelSampling", sigma: Sigma, model_output: Tensor,
                           model_input: Tensor) -> Tensor:
        s = _scalar(sigma)
        levels = torch.tensor([s], dtype=model_input.dtype, device=model_input.device) if s is not None else sigma
        column = levels.shape[:1] + (1,) * (model_output.ndim - 1)
        scaled = ms.timestep(levels).reshape(column) * self.timestep_scaling
        x0 = model_input - model_output * levels.reshape(column)
        c_skip = self.data_std ** 2 / (scaled ** 2 + self.data_std ** 2)
        c_out = scaled / (scaled ** 2 + self.data_std ** 2) ** 0.5
        return c_out * x0 + c_skip * model_input

    def zero_estimate_output(self, ms: "ModelSampling", sigma: float, x: Tensor) -> Tensor:
        # c_out (x - sigma out) + c_skip x = 0, the denoised estimate being affine in the output
        base = self.calculate_denoised(ms, sigma, torch.zeros_like(x), x)  # (c_out + c_skip) x
        slope = base - self.calculate_denoised(ms, sigma, torch.ones_like(x[:1, :1, :1, :1]), x)  # c_out sigma
        return base / slope


class CosmosRFlowPrediction(Prediction):
    """Cosmos' rectified flow written in sigma: with s = sigma / (sigma + 1) the UNet sees (1 - s) x and predicts
    the velocity, x0 = (1 - s) x - s v; initial noise is always scaled by sigma."""

    name = "cosmos_rflow"

    @staticmethod
    def _fraction(sigma: Sigma, ndim: int) -> float | Tensor:
        s = _scalar(sigma)
        if s is not None:
            return s / (s + 1.0)
        return _per_item(sigma / (sigma + 1), ndim)

    def calculate_input(self, ms: "ModelSampling", sigma: Sigma, noise: Tensor) -> Tensor:
        return noise * (1.0 - self._fraction(sigma, noise.ndim))

    def calculate_denoised(self, ms: "ModelSampling", sigma: Sigma, model_output: Tensor,
                           model_input: Tensor) -> Tensor:
        f = self._fraction(sigma, model_output.ndim)
        return model_input * (1.0 - f) - model_output * f

    def noise_scaling(self, ms: "ModelSampling", sigma: Sigma, noise: Tensor, latent_image: Tensor,
                      max_denoise: bool = False) -> Tensor:
        s = _scalar(sigma)
        return noise * (s if s is not None else _per_item(sigma, noise.ndim)) + latent_image

    def zero_estimate_output(self, ms: "ModelSampling", sigma: float, x: Tensor) -> Tensor:
        f = sigma / (sigma + 1.0)
        return x * (1.0 - f) / f


PREDICTIONS: dict[str, type[Prediction]] = {cls.name: cls for cls in (
    Prediction, VPrediction, EdmPrediction, X0Prediction, ImgToImgPrediction, LcmPrediction, CosmosRFlowPrediction)}
# diffusers' prediction_type names
_DIFFUSERS_NAMES = {"epsilon": "eps", "v_prediction": "v_prediction", "sample": "x0"}


# ---- noise-level families ---------------------------------------------------------------------------------


class ModelSampling(ABC):
    """Noise levels (a subclass) with a parametrisation; the ComfyUI ModelSampling interface (module docstring)."""

    def __init__(self, prediction: Prediction, sigmas: Tensor, log_sigmas: Tensor, sigma_data: float = 1.0) -> None:
        self.prediction = prediction
        self.sigmas = sigmas
        self.log_sigmas = log_sigmas
        self.sigma_data = float(sigma_data)

    @property
    def sigma_min(self) -> Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> Tensor:
        return self.sigmas[-1]

    @property
    def prediction_type(self) -> str:
        return self.prediction.name

    @abstractmethod
    def timestep(self, sigma: Tensor) -> Tensor:
        """The UNet's timestep at each noise level."""

    @abstractmethod
    def sigma(self, timestep: Tensor) -> Tensor:
        """The noise level of each timestep."""

    @abstractmethod
    def percent_to_sigma(self, percent: float) -> float:
        """The sigma reached at a fraction of the sampling process (0: above every level, 1: 0)."""

    @abstractmethod
    def sigma_to_percent(self, sigma: float) -> float:
        """The fraction of the sampling process at which `sigma` is reached (percent_to_sigma's inverse)."""

    def unet_timestep(self, sigma: float) -> float:
        """The timestep the UNet is given at noise level `sigma`."""
        return float(self.timestep(torch.tensor(float(sigma), dtype=torch.float32)))

    def calculate_input(self, sigma: Sigma, noise: Tensor) -> Tensor:
        return self.prediction.calculate_input(self, sigma, noise)

    def calculate_denoised(self, sigma: Sigma, model_output: Tensor, model_input: Tensor) -> Tensor:
        return self.prediction.calculate_denoised(self, sigma, model_output, model_input)

    def noise_scaling(self, sigma: Sigma, noise: Tensor, latent_image: Tensor, max_denoise: bool = False) -> Tensor:
        return self.prediction.noise_scaling(self, sigma, noise, latent_image, max_denoise)

    def inverse_noise_scaling(self, sigma: Sigma, latent: Tensor) -> Tensor:
        return self.prediction.inverse_noise_scaling(self, sigma, latent)


class DiscreteSampling(ModelSampling):
    """A discrete-time model's training levels (ComfyUI's ModelSamplingDiscrete): the UNet gets the whole
    timestep nearest in log-sigma, `sigma(t)` interpolates log-sigma between whole timesteps."""

    def __init__(self, schedule: DiscreteSchedule, prediction: Prediction | None = None) -> None:
        super().__init__(prediction or Prediction(), schedule.sigmas32, schedule.log_sigmas32)
        self.schedule = schedule
        self.num_timesteps = schedule.num_timesteps

    def timestep(self, sigma: Tensor) -> Tensor:
        log_sigma = sigma.log()
        table = self._log_sigmas_on(log_sigma.device)  # the table goes to the levels, not the levels to the host
        distances = log_sigma - table.reshape((-1,) + (1,) * log_sigma.ndim)
        return distances.abs().argmin(dim=0).reshape(sigma.shape)

    def _log_sigmas_on(self, device: torch.device) -> Tensor:
        if self.log_sigmas.device == device:
            return self.log_sigmas
        cached = getattr(self, "_device_log_sigmas", None)
        if cached is None or cached[0] is not self.log_sigmas or cached[1].device != device:
            cached = (self.log_sigmas, self.log_sigmas.to(device))
            self._device_log_sigmas = cached
        return cached[1]

    def sigma(self, timestep: Tensor) -> Tensor:
        return self.schedule.sigma32(timestep.to(self.log_sigmas.device)).to(timestep.device)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return PERCENT_ZERO_SIGMA
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * (self.num_timesteps - 1))))

    def sigma_to_percent(self, sigma: float) -> float:
        return self.schedule.sigma_to_percent(sigma)


class DistilledSampling(DiscreteSampling):
    """The levels a consistency model was distilled on (ComfyUI's ModelSamplingDiscreteDistilled): every
    (1000 / 50)-th training level, the last of each stride; timesteps stay in the 0..999 range."""

    def __init__(self, schedule: DiscreteSchedule, prediction: Prediction | None = None, original_steps: int = 50
                 ) -> None:
        self.skip = schedule.num_timesteps // original_steps
        picked = schedule.sigmas32[self.skip - 1::self.skip][:original_steps].clone()
        super().__init__(DiscreteSchedule.from_sigmas(picked), prediction or LcmPrediction())
        self.num_timesteps = schedule.num_timesteps

    def timestep(self, sigma: Tensor) -> Tensor:
        return super().timestep(sigma) * self.skip + (self.skip - 1)

    def sigma(self, timestep: Tensor) -> Tensor:
        return super().sigma((timestep.float() - (self.skip - 1)) / self.skip)

    def sigma_to_percent(self, sigma: float) -> float:
        t = self.schedule.timestep(sigma) * self.skip + (self.skip - 1)
        return min(max(1.0 - t / (self.num_timesteps - 1), 0.0), 1.0)


class ContinuousEDMSampling(ModelSampling):
    """Continuous levels in [sigma_min, sigma_max] (ComfyUI's ModelSamplingContinuousEDM): the UNet gets EDM's
    c_noise = 0.25 log sigma; percents are log-linear between the ends."""

    def __init__(self, sigma_min: float, sigma_max: float, sigma_data: float = 1.0,
                 prediction: Prediction | None = None) -> None:
        if not (sigma_min > 0.0 and sigma_max > 0.0):
            raise ValueError(f"sigma_min and sigma_max must be above 0, got {sigma_min} and {sigma_max}")
        sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), 1000).exp()
        super().__init__(prediction or VPrediction(), sigmas, sigmas.log(), sigma_data)

    def timestep(self, sigma: Tensor) -> Tensor:
        return 0.25 * sigma.log()

    def sigma(self, timestep: Tensor) -> Tensor:
        return (timestep / 0.25).exp()

    def _log_range(self) -> tuple[float, float]:
        return math.log(float(self.sigma_min)), math.log(float(self.sigma_max))

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return PERCENT_ZERO_SIGMA
        if percent >= 1.0:
            return 0.0
        low, high = self._log_range()
        return math.exp((high - low) * (1.0 - percent) + low)

    def sigma_to_percent(self, sigma: float) -> float:
        if sigma <= 0.0:
            return 1.0
        low, high = self._log_range()
        return min(max(1.0 - (math.log(sigma) - low) / (high - low), 0.0), 1.0)


class ContinuousVSampling(ContinuousEDMSampling):
    """Continuous levels whose timestep is 2/pi atan(sigma) (ComfyUI's ModelSamplingContinuousV)."""

    def timestep(self, sigma: Tensor) -> Tensor:
        return sigma.atan() / math.pi * 2

    def sigma(self, timestep: Tensor) -> Tensor:
        return (timestep * math.pi / 2).tan()


class CosmosRFlowSampling(ContinuousEDMSampling):
    """Cosmos' levels: timestep sigma / (sigma + 1), the inverse capped at sigma_max (ComfyUI's
    ModelSamplingCosmosRFlow)."""

    def timestep(self, sigma: Tensor) -> Tensor:
        return sigma / (sigma + 1)

    def sigma(self, timestep: Tensor) -> Tensor:
        top = self.sigma_max.to(timestep.device)
        return torch.where(timestep >= top / (top + 1), top, timestep / (1 - timestep))


# ---- building them ----------------------------------------------------------------------------------------


def zero_terminal_snr(sigmas: Tensor) -> Tensor:
    """Training sigmas rescaled to zero terminal SNR (Lin et al. 2023, algorithm 1): sqrt(alpha_bar) shifted so
    that the last level's is 0 and scaled so that the first level's is kept, the last alpha_bar then set to
    ComfyUI's small positive value. Float64 in and out."""
    root = (1.0 / (sigmas * sigmas + 1.0)).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alphas_bar = root ** 2
    alphas_bar[-1] = ZSNR_LAST_ALPHA_BAR
    return ((1 - alphas_bar) / alphas_bar) ** 0.5


def prediction_named(name: str) -> Prediction:
    """A parametrisation by ComfyUI's name (eps, v_prediction, ...) or diffusers' (epsilon, sample)."""
    key = _DIFFUSERS_NAMES.get(name, name)
    if key not in PREDICTIONS:
        raise ValueError(f"unknown prediction type {name!r}; choose one of {', '.join(PREDICTIONS)}")
    return PREDICTIONS[key]()


def discrete_sampling(alphas_cumprod: Tensor, prediction: str = "eps", zsnr: bool = False,
                      distilled: bool = False) -> DiscreteSampling:
    """The sampling of a discrete training schedule, optionally rescaled to zero terminal SNR, or its LCM subset."""
    schedule = schedule_of(alphas_cumprod)
    if zsnr:
        schedule = DiscreteSchedule.from_sigmas(zero_terminal_snr(schedule.sigmas))
    if distilled:
        return DistilledSampling(schedule, prediction_named(prediction))
    return DiscreteSampling(schedule, prediction_named(prediction))


def model_sampling_of(model: Any) -> ModelSampling:
    """What the MODEL samples with: its "model_sampling" object patch, else the sampling of its training schedule
    and prediction type (also for bare test doubles without the patching surface)."""
    getter = getattr(model, "get_model_object", None)
    if getter is not None:
        return getter("model_sampling")
    return discrete_sampling(model.alphas_cumprod, getattr(model, "prediction_type", "epsilon"))


def latent_format_of(model: Any) -> Any:
    """The MODEL's latent format, or its "latent_format" object patch."""
    getter = getattr(model, "get_model_object", None)
    return getter("latent_format") if getter is not None else model.latent_format
