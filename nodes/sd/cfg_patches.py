"""Guidance patches: nodes that change how a MODEL's conditional and unconditional predictions are combined, by
setting ComfyUI's sampler-level hooks on a clone (see `nodes.sd.cfg_pipeline` for when each hook runs and what
it is given). All of them work on the x0 estimates in the model's space.

- RescaleCFG (Lin et al. 2023, "Common diffusion noise schedules and sample steps are flawed", sec. 3.4): the
  guided v-prediction rescaled to the conditional one's standard deviation, blended by `multiplier`;
- CFGZeroStar (Fan et al. 2025): the unconditional prediction scaled by its optimal projection coefficient;
- APG (Sadat et al. 2024, adaptive projected guidance): the guidance split into parts parallel and orthogonal to
  the conditional prediction, the parallel part scaled by eta, with a norm cap and momentum;
- TCFG (Kwon et al. 2025, tangential damping): the unconditional score projected on the first right singular
  vector of [uncond; cond] scores;
- DifferentialDiffusion (Levin & Fried 2023): a soft inpainting mask turned, step by step, into the region whose
  mask value reaches the step's progress.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from sdgraph.node import Float, Input, Node, Output
from sdgraph.types import MODEL

from sdgraph.nodes.sd.model_sampling_nodes import patchable

Tensor = torch.Tensor
Args = dict[str, Any]
ITEM_DIMS = (-1, -2, -3)  # channel, height, width: one batch item


def _per_item(sigma: Tensor, ndim: int) -> Tensor:
    return sigma.reshape(sigma.shape[:1] + (1,) * (ndim - 1))


# ---- RescaleCFG ---------------------------------------------------------------------------------------------


def rescale_cfg(multiplier: float) -> Callable[[Args], Tensor]:
    """A sampler cfg function: cfg on the v-predictions of both sides, its std per item rescaled to the
    conditional one's (blended by `multiplier`), returned as x - x0 as cfg functions return."""

    def cfg(args: Args) -> Tensor:
        x, scale = args["input"], args["cond_scale"]
        sigma = _per_item(args["sigma"], x.ndim)
        skip, out = 1.0 / (sigma ** 2 + 1.0), sigma / (sigma ** 2 + 1.0) ** 0.5  # x0 = skip x - out v
        cond_v = (x * skip - args["cond_denoised"]) / out
        uncond_v = (x * skip - args["uncond_denoised"]) / out
        guided = uncond_v + scale * (cond_v - uncond_v)
        rescaled = guided * (cond_v.std(dim=ITEM_DIMS, keepdim=True) / guided.std(dim=ITEM_DIMS, keepdim=True))
        v = multiplier * rescaled + (1.0 - multiplier) * guided
        return x - (x * skip - v * out)

    return cfg


class RescaleCFG(Node):
    """Rescale classifier-free guidance so that the guided prediction keeps the conditional one's spread
    (against over-exposure at high cfg, mostly with v-prediction and zero-terminal-SNR models); multiplier blends
    the rescaled prediction with the plain one."""

    category = "advanced/model"
    inputs = [Input("model", MODEL), Float("multiplier", 0.7, min=0.0, max=1.0, step=0.01)]
    outputs = [Output(MODEL)]

    def run(self, model: Any, multiplier: float) -> tuple[Any]:
        patched = patchable(model, "RescaleCFG.model").clone()
        patched.set_model_sampler_cfg_function(rescale_cfg(float(multiplier)))
        return (patched,)


# ---- CFG-Zero* --------------------------------------------------------------------------------------------


def optimal_scale(cond: Tensor, uncond: Tensor) -> Tensor:
    """Per batch item, <cond, uncond> / (|uncond|^2 + 1e-8): the factor that best fits uncond to cond."""
    flat_c, flat_u = cond.reshape(cond.shape[0], -1), uncond.reshape(uncond.shape[0], -1)
    alpha = (flat_c * flat_u).sum(dim=1, keepdim=True) / ((flat_u ** 2).sum(dim=1, keepdim=True) + 1e-8)
    return alpha.reshape((cond.shape[0],) + (1,) * (cond.ndim - 1))


def cfg_zero_star(args: Args) -> Tensor:
    """A post-cfg function: the unconditional x0 in the guidance replaced by alpha times itself, alpha the optimal
    scale of the noise predictions (x - x0)."""
    x, uncond = args["input"], args["uncond_denoised"]
    alpha = optimal_scale(x - args["cond_denoised"], x - uncond)
    return args["denoised"] + (alpha - 1.0) * (1.0 - args["cond_scale"]) * uncond


class CFGZeroStar(Node):
    """CFG-Zero*: scale the unconditional prediction by its best fit to the conditional one before guiding (less
    drift early in sampling when the unconditional estimate is poor)."""

    category = "advanced/guidance"
    inputs = [Input("model", MODEL)]
    outputs = [Output(MODEL, "patched_model")]

    def run(self, model: Any) -> tuple[Any]:
        patched = patchable(model, "CFGZeroStar.model").clone()
        patched.set_model_sampler_post_cfg_function(cfg_zero_star)
        return (patched,)


# ---- APG --------------------------------------------------------------------------------------------------


def _split(v: Tensor, direction: Tensor) -> tuple[Tensor, Tensor]:
    """v's parts parallel and orthogonal to `direction`, per batch item."""
    unit = F.normalize(direction, dim=ITEM_DIMS)
    parallel = (v * unit).sum(dim=ITEM_DIMS, keepdim=True) * unit
    return parallel, v - parallel


class AdaptiveProjection:
    """APG's pre-cfg function. Stateful for momentum: the running guidance restarts when sigma rises (a new
    sampling run)."""

    def __init__(self, eta: float, norm_threshold: float, momentum: float) -> None:
        self.eta, self.norm_threshold, self.momentum = eta, norm_threshold, momentum
        self.running: Tensor | None = None
        self.last_sigma: Tensor | None = None

    def __call__(self, args: Args) -> list[Tensor]:
        outs = args["conds_out"]
        if len(outs) == 1:
            return outs
        cond, uncond, scale = outs[0], outs[1], args["cond_scale"]
        sigma = args["sigma"][0]
        if self.last_sigma is not None and sigma > self.last_sigma:
            self.running = None
        self.last_sigma = sigma
        guidance = cond - uncond
        if self.momentum != 0:
            self.running = guidance if self.running is None else self.momentum * self.running + guidance
            guidance = self.running
        if self.norm_threshold > 0:
            norm = guidance.norm(p=2, dim=ITEM_DIMS, keepdim=True)
            guidance = guidance * torch.minimum(torch.ones_like(norm), self.norm_threshold / norm)
        parallel, orthogonal = _split(guidance, cond)
        # the cond that plain cfg at cond_scale turns into cond + scale * (orthogonal + eta * parallel)
        new_cond = uncond + (orthogonal + self.eta * parallel) + (cond - uncond) / scale
        return [new_cond, uncond, *outs[2:]]


class APG(Node):
    """Adaptive projected guidance: split the guidance into its part along the conditional prediction (scaled
    by eta; 1 keeps it) and the rest, cap its norm at norm_threshold (0: no cap) and smooth it over the steps
    with momentum (0: none; negative values push away from earlier steps' guidance)."""

    display_name = "Adaptive Projected Guidance"
    category = "sampling/custom_sampling"
    inputs = [Input("model", MODEL), Float("eta", 1.0, min=-10.0, max=10.0, step=0.01),
              Float("norm_threshold", 5.0, min=0.0, max=50.0, step=0.1),
              Float("momentum", 0.0, min=-5.0, max=1.0, step=0.01)]
    outputs = [Output(MODEL)]

    def run(self, model: Any, eta: float, norm_threshold: float, momentum: float) -> tuple[Any]:
        patched = patchable(model, "APG.model").clone()
        patched.set_model_sampler_pre_cfg_function(AdaptiveProjection(float(eta), float(norm_threshold),
                                                                       float(momentum)))
        return (patched,)


# ---- TCFG -------------------------------------------------------------------------------------------------


def tangential_damping(cond_score: Tensor, uncond_score: Tensor) -> Tensor:
    """uncond_score projected, per batch item, on the first right singular vector of the 2 x N matrix
    [uncond_score; cond_score] (its tangential part dropped)."""
    batch = cond_score.shape[0]
    u = uncond_score.reshape(batch, 1, -1).float()
    scores = torch.cat([u, cond_score.reshape(batch, 1, -1).float()], dim=1)
    try:
        _, _, vh = torch.linalg.svd(scores, full_matrices=False)
    except RuntimeError:  # some GPU solvers fail on ill-conditioned input: the CPU one does not
        _, _, vh = torch.linalg.svd(scores.cpu(), full_matrices=False)
    top = vh[:, :1, :].to(u.device)
    return ((u @ top.transpose(-2, -1)) * top).reshape_as(uncond_score).to(uncond_score.dtype)


def tangential_damping_cfg(args: Args) -> list[Tensor]:
    """TCFG's pre-cfg function: the unconditional x0 rebuilt from its damped score (left alone when either side
    was not evaluated)."""
    outs, x = args["conds_out"], args["input"]
    if len(outs) <= 1 or any(c is None for c in args["conds"][:2]):
        return outs
    damped = tangential_damping(x - outs[0], x - outs[1])
    return [outs[0], x - damped, *outs[2:]]


class TCFG(Node):
    """Tangential damping CFG: align the unconditional prediction with the conditional one by keeping only its
    component along their shared principal direction, before guidance."""

    display_name = "Tangential Damping CFG"
    category = "advanced/guidance"
    inputs = [Input("model", MODEL)]
    outputs = [Output(MODEL, "patched_model")]

    def run(self, model: Any) -> tuple[Any]:
        patched = patchable(model, "TCFG.model").clone()
        patched.set_model_sampler_pre_cfg_function(tangential_damping_cfg)
        return (patched,)


# ---- Differential Diffusion --------------------------------------------------------------------------------


def differential_mask(strength: float) -> Callable[..., Tensor]:
    """A denoise mask function: at each call the region regenerated is where the mask reaches the progress
    threshold (current timestep - last) / (first - last), the timesteps the model sampling gives the run's first
    sigma, its last (or the model's sigma_min, whichever is higher) and the current one. strength below 1 blends
    that binary mask with the soft one (a strength of 0 counts as 1, as in ComfyUI)."""

    def mask_function(sigma: Tensor, denoise_mask: Tensor, extra_options: dict[str, Any]) -> Tensor:
        ms = extra_options["model"].inner_model.model_sampling
        sigmas = extra_options["sigmas"]
        low = sigmas[-1] if sigmas[-1] > ms.sigma_min else ms.sigma_min
        first, last = ms.timestep(sigmas[0]), ms.timestep(low)
        threshold = (ms.timestep(sigma[0]) - last) / (first - last)
        binary = (denoise_mask >= threshold).to(denoise_mask.dtype)
        if strength and strength < 1:
            return strength * binary + (1 - strength) * denoise_mask
        return binary

    return mask_function


class DifferentialDiffusion(Node):
    """Inpaint with a soft mask as a per-pixel denoising strength: each step regenerates only where the mask
    reaches the step's progress, so grey areas change less than white ones. strength blends that step mask with
    the soft mask."""

    category = "_for_testing"
    inputs = [Input("model", MODEL), Float("strength", 1.0, min=0.0, max=1.0, step=0.01, optional=True)]
    outputs = [Output(MODEL)]

    def run(self, model: Any, strength: float = 1.0) -> tuple[Any]:
        patched = patchable(model, "DifferentialDiffusion.model").clone()
        patched.set_model_denoise_mask_function(differential_mask(float(strength)))
        return (patched,)


NODES = [RescaleCFG, CFGZeroStar, APG, TCFG, DifferentialDiffusion]
