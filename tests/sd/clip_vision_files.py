"""Tiny random CLIP vision towers and style adapters in the real key layouts (shared with
tools/comfy_reference/clip_vision_refs.py, which runs ComfyUI's own code on the same tensors).

The towers have the real depth of their family (ComfyUI tells ViT-L/H/bigG apart by the layer names: 24, 32, 48
layers) and tiny widths: 32 wide, 16 heads (the families' head count), 32-pixel images of 8-pixel patches
(17 positions), a 16-wide projection.
"""
from __future__ import annotations

from typing import Any

import torch

DEPTH = {"vit_l": 24, "vit_h": 32, "vit_g": 48}
ACT = {"vit_l": "quick_gelu", "vit_h": "gelu", "vit_g": "gelu"}
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 16, "image_size": 32, "patch_size": 8,
        "projection_dim": 16, "layer_norm_eps": 1e-5, "num_channels": 3}
STYLE = {"width": 32, "context_dim": 64, "layers": 2, "tokens": 4}
BLOCK_NAMES = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
               "self_attn.out_proj": "attn.out_proj"}
TOP_NAMES = {"embeddings.class_embedding": "class_embedding", "embeddings.patch_embedding.weight": "conv1.weight",
             "embeddings.position_embedding.weight": "positional_embedding", "pre_layrnorm.weight": "ln_pre.weight",
             "pre_layrnorm.bias": "ln_pre.bias", "post_layernorm.weight": "ln_post.weight",
             "post_layernorm.bias": "ln_post.bias"}


def vision_config(family: str = "vit_l") -> dict[str, Any]:
    """The tiny tower's config (transformers' CLIPVisionConfig arguments; also what ComfyUI's JSON holds)."""
    return {**TINY, "num_hidden_layers": DEPTH[family], "hidden_act": ACT[family]}


def _random(shape: torch.Size, name: str, g: torch.Generator) -> torch.Tensor:
    noise = torch.randn(shape, generator=g)
    if name.endswith("weight") and any("norm" in p or p.startswith("ln_") for p in name.split(".")[:-1]):
        return 1.0 + 0.1 * noise
    return 0.2 * noise


def vision_shapes(family: str = "vit_l") -> dict[str, tuple[int, ...]]:
    """The tower's tensors under Hugging Face names (`vision_model.*`, `visual_projection.weight`): what
    transformers' CLIPVisionModelWithProjection holds (written out, so ComfyUI's harness needs no transformers)."""
    c = vision_config(family)
    h, i, p = c["hidden_size"], c["intermediate_size"], c["patch_size"]
    positions = (c["image_size"] // p) ** 2 + 1
    v = "vision_model."
    shapes: dict[str, tuple[int, ...]] = {
        v + "embeddings.class_embedding": (h,), v + "embeddings.patch_embedding.weight": (h, 3, p, p),
        v + "embeddings.position_embedding.weight": (positions, h), v + "pre_layrnorm.weight": (h,),
        v + "pre_layrnorm.bias": (h,), v + "post_layernorm.weight": (h,), v + "post_layernorm.bias": (h,),
        "visual_projection.weight": (c["projection_dim"], h)}
    for n in range(c["num_hidden_layers"]):
        layer = f"{v}encoder.layers.{n}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes.update({f"{layer}self_attn.{proj}.weight": (h, h), f"{layer}self_attn.{proj}.bias": (h,)})
        for norm in ("layer_norm1", "layer_norm2"):
            shapes.update({f"{layer}{norm}.weight": (h,), f"{layer}{norm}.bias": (h,)})
        shapes.update({f"{layer}mlp.fc1.weight": (i, h), f"{layer}mlp.fc1.bias": (i,),
                       f"{layer}mlp.fc2.weight": (h, i), f"{layer}mlp.fc2.bias": (h,)})
    return shapes


def vision_state(family: str = "vit_l", seed: int = 0) -> dict[str, torch.Tensor]:
    """A random tower under Hugging Face names."""
    g = torch.Generator().manual_seed(seed)
    return {k: _random(torch.Size(s), k, g) for k, s in sorted(vision_shapes(family).items())}


def to_open_clip(hf: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The same tower under OpenCLIP names (fused in_proj, transposed proj) below `prefix`."""
    out: dict[str, torch.Tensor] = {}
    layers = {int(k.split(".")[3]) for k in hf if k.startswith("vision_model.encoder.layers.")}
    for name, tensor in hf.items():
        short = name.removeprefix("vision_model.")
        if short in TOP_NAMES:
            out[prefix + TOP_NAMES[short]] = tensor
    out[prefix + "proj"] = hf["visual_projection.weight"].t().contiguous()
    for i in layers:
        src, dst = f"vision_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat([hf[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for ours, theirs in BLOCK_NAMES.items():
                out[f"{dst}{theirs}.{kind}"] = hf[f"{src}{ours}.{kind}"]
    return out


def style_state(seed: int = 5) -> dict[str, torch.Tensor]:
    """A random T2I style adapter (TencentARC's key names) reading the tiny towers' 32-wide tokens."""
    w, c, n, t = STYLE["width"], STYLE["context_dim"], STYLE["layers"], STYLE["tokens"]
    g = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple[int, ...]] = {"style_embedding": (1, t, w), "proj": (w, c), "ln_pre.weight": (w,),
                                          "ln_pre.bias": (w,), "ln_post.weight": (w,), "ln_post.bias": (w,)}
    for i in range(n):
        p = f"transformer_layes.{i}."
        shapes.update({p + "attn.in_proj_weight": (3 * w, w), p + "attn.in_proj_bias": (3 * w,),
                       p + "attn.out_proj.weight": (w, w), p + "attn.out_proj.bias": (w,),
                       p + "ln_1.weight": (w,), p + "ln_1.bias": (w,), p + "ln_2.weight": (w,), p + "ln_2.bias": (w,),
                       p + "mlp.c_fc.weight": (4 * w, w), p + "mlp.c_fc.bias": (4 * w,),
                       p + "mlp.c_proj.weight": (w, 4 * w), p + "mlp.c_proj.bias": (w,)})
    return {k: _random(torch.Size(s), k, g) for k, s in sorted(shapes.items())}


def seeded_image(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


# (family, layout, image shape [B, H, W, C], image seed); the OpenCLIP case is under the "visual." prefix
ENCODE_CASES = {
    "vit_l_hf": ("vit_l", "hf", (2, 40, 56, 3), 1),
    "vit_h_open_clip": ("vit_h", "open_clip", (1, 50, 30, 4), 2),
    "vit_l_exact_size": ("vit_l", "hf", (1, 32, 32, 3), 3),
}
