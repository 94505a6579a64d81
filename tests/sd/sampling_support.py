"""Shared by the sampling tests: a tiny random UNet behind the MODEL interface, conditioning, and a hand-written
diffusers denoising loop (the one `StableDiffusionPipeline.__call__` runs) to compare KSampler with."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from sdgraph.nodes.sd.model_objects import DiffusionModel, LatentFormat, sd_alphas_cumprod

TEXT_DIM = 32
TOKENS = 77
LATENT_HW = 8

TINY_UNET: dict[str, Any] = {
    "sample_size": LATENT_HW, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1, "cross_attention_dim": TEXT_DIM, "attention_head_dim": 8, "norm_num_groups": 32,
}


def tiny_unet(seed: int = 0, **overrides: Any) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**{**TINY_UNET, **overrides}).eval()


@dataclass
class TinyModel:
    """The MODEL socket interface (see `DiffusionModel`) over a bare UNet, without a model manager."""

    module: torch.nn.Module
    prediction_type: str = "epsilon"
    alphas_cumprod: torch.Tensor = field(default_factory=sd_alphas_cumprod)
    is_sdxl: bool = False
    is_sdxl_refiner: bool = False
    device: str = "cpu"
    latent_format: LatentFormat = LatentFormat()  # SD 1.x's, as DiffusionModel's default

    def unet(self, manager: Any = None) -> torch.nn.Module:
        return self.module

    def compute_device(self, manager: Any = None) -> torch.device:
        return torch.device(self.device)

    def dtype(self, manager: Any = None) -> torch.dtype:
        return next(self.module.parameters()).dtype

    sdxl_added_cond = DiffusionModel.sdxl_added_cond


def text(seed: int, tokens: int = TOKENS, dim: int = TEXT_DIM) -> torch.Tensor:
    return torch.randn((1, tokens, dim), generator=torch.Generator().manual_seed(seed))


def conditioning(seed: int, **extras: Any) -> list:
    return [[text(seed), dict(extras)]]


def empty_latent(batch: int = 1, hw: int = LATENT_HW) -> dict[str, torch.Tensor]:
    return {"samples": torch.zeros((batch, 4, hw, hw))}


BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def diffusers_loop(unet: torch.nn.Module, scheduler: Any, cond: torch.Tensor, uncond: torch.Tensor, cfg: float,
                   seed: int, shape: tuple[int, ...], set_timesteps: dict[str, Any],
                   init_latents: torch.Tensor | None = None) -> torch.Tensor:
    """StableDiffusionPipeline's denoising loop, written out: CPU generator, [uncond; cond] in one UNet call."""
    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(**set_timesteps)
    latents = torch.randn(shape, generator=generator) * scheduler.init_noise_sigma
    if init_latents is not None:
        latents = init_latents
    context = torch.cat([uncond.expand(shape[0], -1, -1), cond.expand(shape[0], -1, -1)])
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    with torch.inference_mode():
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            noise_pred = unet(model_input, t, encoder_hidden_states=context).sample
            uncond_pred, cond_pred = noise_pred.chunk(2)
            noise_pred = uncond_pred + cfg * (cond_pred - uncond_pred)
            latents = scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
    return latents


# ---- an analytic model: Gaussian data, whose exact denoiser is known ----------------------------------------

DATA_STD = torch.tensor([0.5, 1.0, 0.75, 0.25], dtype=torch.float64).view(1, 4, 1, 1)


class GaussianDataUNet(torch.nn.Module):
    """The exact epsilon-prediction for latents whose elements are independent N(mean_c, DATA_STD_c^2) per channel.

    The mean of each channel is read from the conditioning (the first four values of its first token), so the
    positive and negative prompts describe two data distributions and cfg moves between them.
    """

    def __init__(self, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        from sdgraph.nodes.sd.schedules import DiscreteSchedule

        self.schedule = DiscreteSchedule(alphas_cumprod)
        self.dtype_anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # TinyModel.dtype reads it
        self.calls = 0

    def forward(self, x_in: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                return_dict: bool = True, **kwargs: Any) -> tuple[torch.Tensor]:
        self.calls += 1
        sigma = self.schedule.sigma(float(t.flatten()[0]))
        x = x_in.double() * (sigma ** 2 + 1) ** 0.5  # undo the VP input scaling c_in
        mean = encoder_hidden_states[:, 0, :4].double().reshape(-1, 4, 1, 1)
        return (((x - exact_denoised(x, sigma, mean)) / sigma).to(x_in.dtype),)


def mean_conditioning(mean: tuple[float, float, float, float]) -> list:
    """CONDITIONING for GaussianDataUNet: data of this per-channel mean."""
    cond = torch.zeros(1, TOKENS, TEXT_DIM)
    cond[0, 0, :4] = torch.tensor(mean)
    return [[cond, {}]]


def exact_flow(x: torch.Tensor, sigma: float, sigma_to: float, mean: torch.Tensor) -> torch.Tensor:
    """Where the probability-flow ODE of the Gaussian data carries x from noise level sigma to sigma_to."""
    ratio = (DATA_STD ** 2 + sigma_to ** 2) / (DATA_STD ** 2 + sigma ** 2)
    return mean + (x.double() - mean) * ratio ** 0.5


def exact_denoised(x: torch.Tensor, sigma: float, mean: torch.Tensor) -> torch.Tensor:
    """E[x0 | x] for the Gaussian data: what an exact model predicts from x at noise level sigma."""
    return mean + (x.double() - mean) * (DATA_STD ** 2 / (DATA_STD ** 2 + sigma ** 2))
