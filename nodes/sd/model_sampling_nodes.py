"""Nodes that replace a MODEL's model sampling (ComfyUI's "model_sampling" object patch): what noise levels it is
sampled at, the timesteps its UNet is given and how the UNet's output is read (see `nodes.sd.model_sampling`).

The patch is read wherever sampling asks the MODEL (`get_model_object("model_sampling")`): KSampler's schedules
and initial noise, the denoiser, BasicScheduler, SDTurboScheduler, SamplingPercentToSigma, ControlNet windows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from sdgraph.node import Boolean, Float, Input, Node, Output
from sdgraph.types import MODEL

from sdgraph.nodes.sd.custom_sigmas import choice
from sdgraph.nodes.sd.model_sampling import (ContinuousEDMSampling, ContinuousVSampling, CosmosRFlowSampling,
                                             discrete_sampling, prediction_named)

ADVANCED_MODEL = "advanced/model"


def patchable(model: Any, where: str) -> Any:
    """The MODEL input as a value with ComfyUI's patching surface (clone, object patches, model options)."""
    if not (hasattr(model, "clone") and hasattr(model, "add_object_patch") and hasattr(model, "model_options")):
        raise ValueError(f"{where}: expected a MODEL (from a checkpoint loader), got {type(model).__name__}")
    return model


@dataclass(frozen=True)
class ChannelLatentFormat:
    """A latent space normalised per channel: the UNet samples (latent - mean) * scale_factor / std."""

    scale_factor: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def _stats(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, len(self.mean), 1, 1)
        mean = torch.tensor(self.mean).view(shape).to(latent.device, latent.dtype)
        return mean, torch.tensor(self.std).view(shape).to(latent.device, latent.dtype)

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(latent)
        return (latent - mean) * self.scale_factor / std

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(latent)
        return latent * std / self.scale_factor + mean


# Playground v2.5's latent space (an SDXL VAE's latents, normalised per channel), as ComfyUI declares it
PLAYGROUND_V25 = ChannelLatentFormat(0.5, (-1.6574, 1.886, -1.383, 2.5155), (8.4927, 5.9022, 6.5498, 5.2299))


class ModelSamplingDiscrete(Node):
    """Sample the MODEL at its training schedule's noise levels with another parametrisation: eps (noise
    prediction, SD 1.x/XL), v_prediction (SD 2.x 768-v and v-pred fine-tunes), lcm (a latent-consistency model,
    at the 50 levels it was distilled on), x0 (the UNet predicts the clean latent), img_to_img (x0 from the
    unscaled input). zsnr rescales the schedule to zero terminal SNR: the top level becomes almost pure noise
    (sigma about 4519), for models trained that way."""

    category = ADVANCED_MODEL
    inputs = [Input("model", MODEL), choice("sampling", ["eps", "v_prediction", "lcm", "x0", "img_to_img"]),
              Boolean("zsnr", False)]
    outputs = [Output(MODEL)]

    def run(self, model: Any, sampling: str, zsnr: bool) -> tuple[Any]:
        patched = patchable(model, "ModelSamplingDiscrete.model").clone()
        patched.add_object_patch("model_sampling", discrete_sampling(model.alphas_cumprod, sampling, bool(zsnr),
                                                                     distilled=sampling == "lcm"))
        return (patched,)


def _bounds(where: str, sigma_max: float, sigma_min: float) -> None:
    for name, value in (("sigma_max", sigma_max), ("sigma_min", sigma_min)):
        if not value > 0.0:
            raise ValueError(f"{where}.{name}: must be above 0 (the noise levels are spaced in log-sigma), got {value}")


class ModelSamplingContinuousEDM(Node):
    """Sample the MODEL at continuous noise levels between sigma_min and sigma_max, its UNet given EDM's timestep
    0.25 log(sigma): for models trained that way (SDXL-architecture EDM models such as CosXL and Playground v2.5).
    edm uses EDM's preconditioning (sigma_data 0.5); edm_playground_v2.5 also switches the latent space to
    Playground v2.5's per-channel one; v_prediction and eps read the output as those parametrisations do.
    cosmos_rflow is the rectified-flow parametrisation of NVIDIA's Cosmos models (not an SD family model; it is
    applied exactly, to whatever UNet the MODEL holds)."""

    category = ADVANCED_MODEL
    inputs = [Input("model", MODEL), choice("sampling", ["v_prediction", "edm", "edm_playground_v2.5", "eps",
                                                         "cosmos_rflow"]),
              Float("sigma_max", 120.0, min=0.0, max=1000.0, step=0.001, round=False),
              Float("sigma_min", 0.002, min=0.0, max=1000.0, step=0.001, round=False)]
    outputs = [Output(MODEL)]

    def run(self, model: Any, sampling: str, sigma_max: float, sigma_min: float) -> tuple[Any]:
        where = "ModelSamplingContinuousEDM"
        patched = patchable(model, f"{where}.model").clone()
        _bounds(where, sigma_max, sigma_min)
        edm = sampling in ("edm", "edm_playground_v2.5")
        family = CosmosRFlowSampling if sampling == "cosmos_rflow" else ContinuousEDMSampling
        prediction = prediction_named("edm" if edm else sampling)
        patched.add_object_patch("model_sampling", family(sigma_min, sigma_max, 0.5 if edm else 1.0, prediction))
        if sampling == "edm_playground_v2.5":
            patched.add_object_patch("latent_format", PLAYGROUND_V25)
        return (patched,)


class ModelSamplingContinuousV(Node):
    """Sample the MODEL at continuous noise levels between sigma_min and sigma_max with v-prediction, its UNet given
    the timestep 2/pi atan(sigma): for continuous-time v-prediction models."""

    category = ADVANCED_MODEL
    inputs = [Input("model", MODEL), choice("sampling", ["v_prediction"]),
              Float("sigma_max", 500.0, min=0.0, max=1000.0, step=0.001, round=False),
              Float("sigma_min", 0.03, min=0.0, max=1000.0, step=0.001, round=False)]
    outputs = [Output(MODEL)]

    def run(self, model: Any, sampling: str, sigma_max: float, sigma_min: float) -> tuple[Any]:
        where = "ModelSamplingContinuousV"
        patched = patchable(model, f"{where}.model").clone()
        _bounds(where, sigma_max, sigma_min)
        patched.add_object_patch("model_sampling",
                                 ContinuousVSampling(sigma_min, sigma_max, 1.0, prediction_named(sampling)))
        return (patched,)


NODES = [ModelSamplingDiscrete, ModelSamplingContinuousEDM, ModelSamplingContinuousV]
