"""A second toy for the sampler-patch references: a real (tiny, random) SD1-layout UNet, whose middle block has a
transformer, for the guidance patches that change attention (PerturbedAttentionGuidance, SelfAttentionGuidance).
`toy_unet.py`'s closed-form toy has no attention to patch.

Shared by tests/sd/test_attention_guidance_reference.py (sdgraph runs the diffusers module) and
tools/comfy_reference/attention_guidance.py (ComfyUI runs the same weights, in LDM names, in its own UNetModel).
The cases are plain data, as `sampler_patch_cases.py`'s: patches (node name, inputs) then KSampler; "shape" the
empty latent's; "guider": "basic" samples with BasicGuider (no negative) through SamplerCustomAdvanced
instead. Positive and negative conditionings are toy_text(1) and toy_text(2).
"""
from __future__ import annotations

from typing import Any

import torch

SEED = 77
TEXT_DIM = 32
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 16, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1, "cross_attention_dim": TEXT_DIM, "attention_head_dim": 8, "norm_num_groups": 32,
}
HEADS = 8  # diffusers' attention_head_dim of an SD1 config is its head count; ComfyUI's SD15 config sets 8


def attention_unet(seed: int = 3, middle: bool = True) -> torch.nn.Module:
    """The toy UNet, every weight drawn here from `seed` (not diffusers' initialisation, which may change):
    fan-in scaled weights, norms near 1, small biases, and an output layer a tenth of that, so that the sampled
    latents stay of order 1 and a 1e-5 change of the input moves them by ~5e-5 (a random UNet at full gain is
    chaotic: float rounding alone would part the engines). `middle=False` drops the middle block."""
    from diffusers import UNet2DConditionModel

    config = UNET_CONFIG if middle else dict(UNET_CONFIG, mid_block_type=None)
    unet = UNet2DConditionModel(**config)
    generator = torch.Generator().manual_seed(seed)
    norms = {name for name, m in unet.named_modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))}
    with torch.no_grad():
        for name, p in sorted(unet.named_parameters()):
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim > 1:
                value = noise / (p[0].numel() ** 0.5)
            elif name.rsplit(".", 1)[0] in norms and name.endswith("weight"):
                value = 1.0 + 0.1 * noise
            else:
                value = 0.05 * noise
            if name.startswith("conv_out."):
                value = value * 0.1
            p.copy_(value)
    return unet.eval()


def toy_text(seed: int) -> torch.Tensor:
    return torch.randn((1, 77, TEXT_DIM), generator=torch.Generator().manual_seed(seed))


# The UNet's output read as x0 keeps the sampled latents of order 1 (as epsilon, of order sigma_max); the *_eps
# cases keep epsilon.
X0 = ("ModelSamplingDiscrete", {"sampling": "x0", "zsnr": False})
BASE: dict[str, Any] = {"patches": [X0], "sampler": "euler", "scheduler": "karras", "steps": 6, "cfg": 5.0,
                        "shape": (1, 4, 16, 16), "guider": None}


def _case(*patches: tuple[str, dict[str, Any]], eps: bool = False, **changes: Any) -> dict[str, Any]:
    return {**BASE, "patches": ([] if eps else [X0]) + list(patches), **changes}


def _pag(scale: float) -> tuple[str, dict[str, Any]]:
    return ("PerturbedAttentionGuidance", {"scale": scale})


def _sag(scale: float, blur_sigma: float) -> tuple[str, dict[str, Any]]:
    return ("SelfAttentionGuidance", {"scale": scale, "blur_sigma": blur_sigma})


# pag_then_sag: SAG's recorder replaces ("middle", 0, 0), which ComfyUI looks up before PAG's ("middle", 0); the
# middle transformer has one block, so PAG's second pass is the plain conditional one and PAG adds nothing.
CASES: dict[str, dict[str, Any]] = {
    "plain": _case(),
    "plain_eps": _case(eps=True),
    "pag_3": _case(_pag(3.0)),
    "pag_1_5_dpmpp_2m": _case(_pag(1.5), sampler="dpmpp_2m", scheduler="normal"),
    "pag_cfg1": _case(_pag(2.0), cfg=1.0),
    "pag_eps": _case(_pag(3.0), eps=True),
    "pag_basic_guider": _case(_pag(2.5), guider="basic"),
    "sag_default": _case(_sag(0.5, 2.0)),
    "sag_strong_sigma4": _case(_sag(1.5, 4.0)),
    "sag_negative_sigma1": _case(_sag(-1.0, 1.0), scheduler="normal"),
    "sag_cfg1": _case(_sag(0.8, 2.0), cfg=1.0),
    "sag_heun_wide_batch2": _case(_sag(0.7, 3.0), sampler="heun", steps=4, shape=(2, 4, 16, 24)),
    "sag_eps": _case(_sag(0.5, 2.0), eps=True),
    "pag_then_sag": _case(_pag(2.0), _sag(0.5, 2.0)),
}
