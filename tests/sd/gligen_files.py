"""A tiny SD1-style UNet and a tiny GLIGEN file in ComfyUI's key layout for it, shared by the GLIGEN tests and
tools/comfy_reference/gligen_refs.py.

The UNet is sampling_support's tiny one at channels 64 / 128 (GLIGEN's gated attention uses 64-wide heads unless
its tokens are 768 wide, so a transformer narrower than 64 could not hold one): transformers at input_blocks.1.1
(64 wide), middle_block.1 (128), output_blocks.2.1 and output_blocks.3.1 (64), text context 32 wide.

The GLIGEN file is the real layout at tiny sizes: `position_net.*` with 32-wide text embeddings and 32-wide
grounding tokens (real files: 768 / 768; the MLP's hidden width 512 and the 64 Fourier features are fixed), and
one `<block>.transformer_blocks.0.fuser.*` module per transformer (linear 32 -> width, attention with 64-wide
heads, GEGLU feed-forward of 4x width), seeded N(0, 0.1) weights, the gates alpha_attn 0.8 / alpha_dense -0.6
(trained files have non-zero gates; zero gates would make GLIGEN do nothing).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sampling_support import TEXT_DIM, tiny_unet
from sdgraph.nodes.sd.ldm_names import unet_to_ldm

GLIGEN_CHANNELS = [64, 128]
TOKEN_DIM = TEXT_DIM
ALPHA_ATTN, ALPHA_DENSE = 0.8, -0.6
KINDS = ("input_blocks", "middle_block", "output_blocks")


def gligen_unet(seed: int = 3) -> torch.nn.Module:
    return tiny_unet(seed, block_out_channels=GLIGEN_CHANNELS)


def ldm_unet_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The UNet's weights under LDM names (model.diffusion_model.*), as a single-file checkpoint holds them."""
    return unet_to_ldm(unet.state_dict(), dict(unet.config))


def transformer_blocks(unet: torch.nn.Module) -> list[tuple[str, int]]:
    """(LDM prefix of each transformer's first block, its width) in the order the UNet runs them."""
    found = []
    for key, value in ldm_unet_state(unet).items():
        if key.endswith(".transformer_blocks.0.attn1.to_q.weight"):
            prefix = key.removeprefix("model.diffusion_model.").removesuffix("attn1.to_q.weight")
            kind, number = prefix.split(".")[:2]
            found.append(((KINDS.index(kind), int(number)), prefix, value.shape[0]))
    return [(prefix, width) for _, prefix, width in sorted(found)]


def gligen_state(unet: torch.nn.Module, seed: int = 11, text_dim: int = TEXT_DIM,
                 token_dim: int = TOKEN_DIM) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=g) * 0.1

    sd = {"position_net.null_positive_feature": rand(text_dim), "position_net.null_position_feature": rand(64),
          "position_net.linears.0.weight": rand(512, text_dim + 64), "position_net.linears.0.bias": rand(512),
          "position_net.linears.2.weight": rand(512, 512), "position_net.linears.2.bias": rand(512),
          "position_net.linears.4.weight": rand(token_dim, 512), "position_net.linears.4.bias": rand(token_dim)}
    for prefix, width in transformer_blocks(unet):
        p = prefix + "fuser."
        sd.update({p + "linear.weight": rand(width, token_dim), p + "linear.bias": rand(width),
                   p + "attn.to_q.weight": rand(width, width), p + "attn.to_k.weight": rand(width, width),
                   p + "attn.to_v.weight": rand(width, width), p + "attn.to_out.0.weight": rand(width, width),
                   p + "attn.to_out.0.bias": rand(width), p + "ff.net.0.proj.weight": rand(8 * width, width),
                   p + "ff.net.0.proj.bias": rand(8 * width), p + "ff.net.2.weight": rand(width, 4 * width),
                   p + "ff.net.2.bias": rand(width), p + "norm1.weight": 1 + rand(width), p + "norm1.bias": rand(width),
                   p + "norm2.weight": 1 + rand(width), p + "norm2.bias": rand(width),
                   p + "alpha_attn": torch.tensor(ALPHA_ATTN), p + "alpha_dense": torch.tensor(ALPHA_DENSE)})
    return sd


def save_gligen(path: Path, unet: torch.nn.Module, **kwargs: Any) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file

    sd = gligen_state(unet, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return sd


def pooled_text(seed: int) -> torch.Tensor:
    """A stand-in CLIP pooled output [1, 32] for a box's text."""
    return torch.randn((1, TEXT_DIM), generator=torch.Generator().manual_seed(seed))


# Sampling cases shared with the reference script: boxes are (text, width, height, x, y) in pixels as the node
# takes them (a width of 4 is a zero-wide box in latent pixels; x 48 + width 64 reaches past a 64-pixel image).
TEXT_SEEDS = {"a cat": 21, "a red ball": 22, "sky": 23}
LATENT_SHAPE = (2, 4, 8, 8)
SEED = 42
CASES: dict[str, dict[str, Any]] = {
    "one_box": {"boxes": [("a cat", 32, 24, 8, 16)], "sampler": "euler", "scheduler": "normal", "steps": 4,
                "cfg": 5.0},
    "edge_boxes": {"boxes": [("a cat", 4, 64, 0, 0), ("a red ball", 64, 64, 48, 40), ("sky", 64, 16, 0, 0)],
                   "sampler": "dpmpp_2m", "scheduler": "karras", "steps": 4, "cfg": 4.0},
    "area_twin": {"boxes": [("a cat", 16, 16, 8, 8)], "area": (32, 32, 32, 32), "sampler": "euler",
                  "scheduler": "normal", "steps": 3, "cfg": 6.0},
    "rescale_cfg": {"boxes": [("a cat", 32, 24, 8, 16), ("sky", 64, 16, 0, 0)], "rescale": 0.7,
                    "sampler": "euler", "scheduler": "normal", "steps": 3, "cfg": 5.0},
}


class StubClip:
    """A CLIP stand-in for GLIGENTextBoxApply in both engines: a box text's pooled output is `pooled_text` of its
    seed (the text encoders themselves are compared elsewhere)."""

    def tokenize(self, text: str) -> str:
        return text

    def encode_from_tokens(self, tokens: str, return_pooled: Any = False) -> tuple[None, torch.Tensor]:
        assert return_pooled == "unprojected"
        return None, pooled_text(TEXT_SEEDS[tokens])
