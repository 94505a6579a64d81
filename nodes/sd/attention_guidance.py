"""Guidance that runs the UNet once more with its self-attention disturbed, as ComfyUI's model-patch nodes do. Both
clone the MODEL and set a post-cfg function (see `nodes.sd.cfg_pipeline`) that calls `calc_cond_batch` again;
the attention is changed through patches_replace["attn1"] (see `nodes.sd.transformer_walk`).

- PerturbedAttentionGuidance (Ahn et al. 2024, PAG): the conditional side is evaluated again with every
  self-attention of the middle block ("middle", 0) answering its values unmixed (an identity attention map);
  guided += scale * (cond - perturbed);
- SelfAttentionGuidance (Hong et al. 2023, SAG): the first self-attention of the middle block keeps the
  unconditional side's attention probabilities. Averaged over heads and summed over queries they say how much
  each position is attended; positions above 1 (more than an even share) mark where the unconditional x0
  estimate is replaced by its Gaussian blur (9 x 9, reflect-padded). That degraded x0, re-noised with the step's
  own noise (x - uncond x0), is evaluated on the unconditional side; guided += scale * (degraded - that
  estimate). The negative side runs at cfg 1 too. Latents whose smaller side is 4 or less are left as they
  are (the blur's padding needs more).

Where ComfyUI fails, these say why: SAG with no unconditional side (a guider without a negative), or an
attention map that cannot be laid out on the latent's grid. blur_sigma 0 means no blur (SAG then changes
nothing), where ComfyUI's kernel is 0 / 0.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from sdgraph.node import Float, Input, Node, Output
from sdgraph.nodes.sd.cfg_pipeline import calc_cond_batch
from sdgraph.nodes.sd.model_patcher import set_model_options_patch_replace
from sdgraph.nodes.sd.model_sampling_nodes import patchable
from sdgraph.nodes.sd.transformer_walk import attention
from sdgraph.types import MODEL

Tensor = torch.Tensor
Args = dict[str, Any]
UNCOND = 1  # the unconditional side's index in cond_or_uncond
BLUR_KERNEL = 9
ATTENDED = 1.0  # a position attended more than this (summed over queries) is blurred


# ---- PAG ----------------------------------------------------------------------------------------------------


def value_passthrough(q: Tensor, k: Tensor, v: Tensor, extra_options: Args, mask: Tensor | None = None) -> Tensor:
    """An attention whose map is the identity: each token keeps its own value."""
    return v


def perturbed_attention_guidance(scale: float) -> Callable[[Args], Tensor]:
    def post_cfg(args: Args) -> Tensor:
        denoised = args["denoised"]
        if scale == 0:
            return denoised
        options = set_model_options_patch_replace(dict(args["model_options"]), value_passthrough, "attn1",
                                                  "middle", 0)
        (perturbed,) = calc_cond_batch(args["model"], [args["cond"]], args["input"], args["sigma"], options)
        return denoised + (args["cond_denoised"] - perturbed) * scale

    return post_cfg


class PerturbedAttentionGuidance(Node):
    """Perturbed-attention guidance: steer away from what the model predicts when the middle block's
    self-attention is switched off (each position sees only itself). Costs one more UNet pass per step."""

    category = "model_patches/unet"
    inputs = [Input("model", MODEL), Float("scale", 3.0, min=0.0, max=100.0, step=0.01, round=0.01)]
    outputs = [Output(MODEL)]

    def run(self, model: Any, scale: float) -> tuple[Any]:
        patched = patchable(model, "PerturbedAttentionGuidance.model").clone()
        patched.set_model_sampler_post_cfg_function(perturbed_attention_guidance(float(scale)))
        return (patched,)


# ---- SAG ----------------------------------------------------------------------------------------------------


def attention_probabilities(q: Tensor, k: Tensor, v: Tensor, heads: int) -> tuple[Tensor, Tensor]:
    """Plain softmax attention of [B, N, heads * d] projections: (output [B, N, heads * d], probabilities
    [B * heads, N, M], item-major). The scores are computed in float32."""
    batch, _, inner = q.shape
    dim_head = inner // heads

    def split(t: Tensor) -> Tensor:
        return t.reshape(batch, -1, heads, dim_head).permute(0, 2, 1, 3).reshape(batch * heads, -1, dim_head)

    q, k, v = split(q), split(k), split(v)
    probs = torch.softmax(torch.bmm(q.float(), k.float().transpose(1, 2)) * dim_head ** -0.5, dim=-1)
    out = torch.bmm(probs.to(v.dtype), v)
    return out.reshape(batch, heads, -1, dim_head).permute(0, 2, 1, 3).reshape(batch, -1, inner), probs


class AttentionRecorder:
    """An attn1 replacement that keeps the unconditional chunk's attention probabilities of the last call that
    evaluated it (the other calls attend as usual)."""

    def __init__(self) -> None:
        self.probs: Tensor | None = None

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, extra_options: Args) -> Tensor:
        heads = extra_options["n_heads"]
        chunks = list(extra_options.get("cond_or_uncond", [0]))
        if UNCOND not in chunks:
            return attention(q, k, v, heads)
        out, probs = attention_probabilities(q, k, v, heads)
        rows = heads * (q.shape[0] // len(chunks))
        index = chunks.index(UNCOND)
        self.probs = probs[rows * index:rows * (index + 1)]
        return out

    def take(self) -> Tensor | None:
        probs, self.probs = self.probs, None
        return probs


def attention_grid(tokens: int, height: int, width: int) -> tuple[int, int]:
    """The (rows, columns) of a block's feature map with `tokens` positions under a height x width latent:
    ComfyUI's search, outward from the aspect-matched row count for one that divides the tokens."""
    guess = round(math.sqrt(height / width * tokens))
    for offset in range(math.floor(math.sqrt(tokens) / 2)):
        for rows in (guess + offset, max(1, guess - offset)):
            if tokens % rows == 0:
                return rows, tokens // rows
    raise ValueError(f"SelfAttentionGuidance: the middle block's attention over {tokens} positions cannot be laid "
                     f"out on a {height} x {width} latent's grid; use a larger picture")


def attended_mask(probs: Tensor, batch: int, height: int, width: int) -> Tensor:
    """[batch, 1, height, width], 1 where the attention map attends a position more than ATTENDED."""
    tokens = probs.shape[-1]
    attended = probs.reshape(batch, -1, probs.shape[-2], tokens).mean(dim=1).sum(dim=1) > ATTENDED
    rows, cols = attention_grid(tokens, height, width)
    mask = attended.reshape(batch, 1, rows, cols).to(probs.dtype)
    return F.interpolate(mask, size=(height, width), mode="nearest")


def gaussian_blur(x: Tensor, sigma: float, size: int = BLUR_KERNEL) -> Tensor:
    """Each channel convolved with a size x size Gaussian of std `sigma` (pixels), reflect-padded; sigma 0 is no
    blur."""
    if sigma == 0:
        return x
    half = (size - 1) / 2
    taps = torch.exp(-0.5 * (torch.linspace(-half, half, size) / sigma) ** 2)
    taps = (taps / taps.sum()).to(device=x.device, dtype=x.dtype)
    channels = x.shape[-3]
    kernel = torch.outer(taps, taps).expand(channels, 1, size, size)
    padded = F.pad(x, [size // 2] * 4, mode="reflect")
    return F.conv2d(padded, kernel, groups=channels)


def blur_attended(x0: Tensor, probs: Tensor, sigma: float) -> Tensor:
    """x0 with its strongly attended positions replaced by its blur."""
    batch, _, height, width = x0.shape
    mask = attended_mask(probs, batch, height, width)
    return gaussian_blur(x0, sigma) * mask + x0 * (1 - mask)


def self_attention_guidance(scale: float, blur_sigma: float, recorder: AttentionRecorder) -> Callable[[Args], Tensor]:
    def post_cfg(args: Args) -> Tensor:
        denoised = args["denoised"]
        probs = recorder.take()
        if min(denoised.shape[2:]) <= BLUR_KERNEL // 2 or scale == 0:
            return denoised
        if probs is None or args["uncond"] is None:
            raise ValueError("SelfAttentionGuidance: this step evaluated no unconditional (negative) side, which "
                             "it blurs; sample with a negative conditioning (KSampler, CFGGuider)")
        uncond_x0 = args["uncond_denoised"]
        degraded = blur_attended(uncond_x0, probs, blur_sigma)
        renoised = degraded + args["input"] - uncond_x0
        (blurred_pred,) = calc_cond_batch(args["model"], [args["uncond"]], renoised, args["sigma"],
                                          args["model_options"])
        recorder.take()  # that pass recorded too: never let a later step read it
        return denoised + (degraded - blurred_pred) * scale

    return post_cfg


class SelfAttentionGuidance(Node):
    """Self-attention guidance: blur the unconditional prediction where the model's middle self-attention looks
    hardest, and steer away from what the model makes of that blurred version (sharper detail, fewer artefacts).
    Costs one more UNet pass per step and runs the negative side even at cfg 1."""

    display_name = "Self-Attention Guidance"
    category = "_for_testing"
    experimental = True
    inputs = [Input("model", MODEL), Float("scale", 0.5, min=-2.0, max=5.0, step=0.01),
              Float("blur_sigma", 2.0, min=0.0, max=10.0, step=0.1)]
    outputs = [Output(MODEL)]

    def run(self, model: Any, scale: float, blur_sigma: float) -> tuple[Any]:
        patched = patchable(model, "SelfAttentionGuidance.model").clone()
        recorder = AttentionRecorder()
        patched.set_model_sampler_post_cfg_function(self_attention_guidance(float(scale), float(blur_sigma),
                                                                            recorder),
                                                    disable_cfg1_optimization=True)
        patched.set_model_attn1_replace(recorder, "middle", 0, 0)
        return (patched,)


NODES = [PerturbedAttentionGuidance, SelfAttentionGuidance]
