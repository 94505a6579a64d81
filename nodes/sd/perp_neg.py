"""PerpNegGuider: guidance with the negative prompt's component perpendicular to the positive one (Perp-Neg,
Armandpour et al. 2023), both measured from an empty prompt's prediction.

With e, p, n the x0 estimates of the empty, positive and negative conditionings (one batched call, through
ComfyUI's `calc_cond_batch`, so UNet wrappers see it), d_p = p - e and d_n = n - e:

    perp = d_n - (<d_n, d_p> / |d_p|^2) d_p          (inner products over the whole batch, as ComfyUI's)
    out  = e + cfg (d_p - neg_scale perp)

The MODEL's pre-cfg functions run on [p, n, e] before this and its post-cfg functions after it, with the
empty side's cond and estimate added to their arguments ("empty_cond", "empty_cond_denoised"). Unless the
MODEL disables ComfyUI's cfg-1 optimisation, neg_scale 0 skips the negative and, with cfg 1 too, the empty one.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from sdgraph.node import Float, Input, Node, Output
from sdgraph.types import CONDITIONING, MODEL

from sdgraph.nodes.sd.cfg_pipeline import calc_cond_batch, post_cfg, pre_cfg, step_levels
from sdgraph.nodes.sd.custom_sampling import GUIDER, ComposedDenoiser, Guider, _as_negative
from sdgraph.nodes.sd.denoiser import SDDenoiser
from sdgraph.nodes.sd.k_samplers import DenoiseFn

Tensor = torch.Tensor


def perp_neg(positive: Tensor, negative: Tensor, empty: Tensor, neg_scale: float, cond_scale: float) -> Tensor:
    """The Perp-Neg combination of the three x0 estimates (module docstring)."""
    d_pos, d_neg = positive - empty, negative - empty
    perp = d_neg - ((d_neg * d_pos).sum() / torch.norm(d_pos) ** 2) * d_pos
    return empty + cond_scale * (d_pos - perp * neg_scale)


class PerpNegGuide(Guider):
    def __init__(self, model: Any, positive: list, negative: list, empty: list, cfg: float, neg_scale: float
                 ) -> None:
        super().__init__(model)
        self.positive, self.negative, self.empty = positive, negative, _as_negative(empty)
        self.cfg, self.neg_scale = float(cfg), float(neg_scale)

    def denoiser(self, samples: Tensor, manager: Any, keep_uncond: bool = False) -> DenoiseFn:
        return _PerpNegDenoiser(self, SDDenoiser(self.model, self.positive, [], 1.0, samples, manager), keep_uncond)


class _PerpNegDenoiser(ComposedDenoiser):
    def __init__(self, guide: PerpNegGuide, base: SDDenoiser, keep_uncond: bool) -> None:
        super().__init__(base)
        self.guide = guide
        self.negative, self.empty = base.prepare(guide.negative, "negative"), base.prepare(guide.empty, "negative")
        # a CFG++ sampler needs the negative estimate, as ComfyUI's cfg-1 option off does
        self.keep_all = keep_uncond or bool(base.model_options.get("disable_cfg1_optimization"))

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        return self.with_uncond(x, sigma)[0]

    def with_uncond(self, x: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """(guided x0, the negative's x0): what a CFG++ sampler steps with."""
        base, guide, options = self.base, self.guide, self.base.model_options
        timestep = step_levels(base, x, float(sigma))
        negative, empty = self.negative, self.empty
        if not self.keep_all and math.isclose(guide.neg_scale, 0.0):
            negative = None
            empty = None if math.isclose(guide.cfg, 1.0) else empty
        conds = [base.positive, negative, empty]
        out = pre_cfg(base, conds, calc_cond_batch(base, conds, x, timestep, options), guide.cfg, x, timestep,
                      options)
        pos, neg, nocond = out
        result = perp_neg(pos, neg, nocond, guide.neg_scale, guide.cfg)
        result = post_cfg(base, result, base.positive, negative, pos, neg, guide.cfg, x, timestep, options,
                          empty_cond=empty, empty_cond_denoised=nocond)
        return result, neg


class PerpNegGuider(Node):
    """Guide with the positive prompt against the part of the negative prompt perpendicular to it, both taken
    relative to an empty prompt's prediction (Perp-Neg): the negative removes what it does not share with the
    positive. neg_scale weighs the perpendicular negative."""

    category = "_for_testing"
    inputs = [Input("model", MODEL), Input("positive", CONDITIONING), Input("negative", CONDITIONING),
              Input("empty_conditioning", CONDITIONING), Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01),
              Float("neg_scale", 1.0, min=0.0, max=100.0, step=0.01)]
    outputs = [Output(GUIDER)]

    def run(self, model: Any, positive: list, negative: list, empty_conditioning: list, cfg: float,
            neg_scale: float) -> tuple[Guider]:
        return (PerpNegGuide(model, positive, negative, empty_conditioning, cfg, neg_scale),)


NODES = [PerpNegGuider]
