"""ComfyUI's names for the weights of a MODEL and a CLIP, mapped to sdgraph's module parameters.

Weight patches and merges address weights by these names, as ComfyUI's ModelPatcher does, so block-wise merge
nodes and plugins see the layout they know:
- MODEL: "diffusion_model." + the original (LDM) UNet name, e.g. "diffusion_model.input_blocks.1.1.proj_in.weight";
- CLIP: "<clip_l|clip_h|clip_g>.transformer." + the Hugging Face CLIP parameter name, e.g.
  "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" (whatever prefix the installed
  transformers gives its own parameter names).
"""
from __future__ import annotations

import weakref
from typing import Any

import torch

from sdgraph.nodes.sd.ldm_names import unet_name_to_ldm

UNET_PREFIX = "diffusion_model."
_UNET_MAPS: "weakref.WeakKeyDictionary[torch.nn.Module, dict[str, str]]" = weakref.WeakKeyDictionary()


def unet_key_map(unet: torch.nn.Module) -> dict[str, str]:
    """{ComfyUI key: parameter name} for a diffusers UNet (built once per module)."""
    found = _UNET_MAPS.get(unet)
    if found is None:
        config = dict(unet.config)
        found = {}
        for name, _ in unet.named_parameters():
            ldm = unet_name_to_ldm(name, config)
            if ldm is not None:
                found[UNET_PREFIX + ldm] = name
        _UNET_MAPS[unet] = found
    return found


def clip_prefix(kind: str) -> str:
    """ComfyUI's name of a text encoder inside its CLIP: clip_l, clip_h (SD 2.x's OpenCLIP-H) or clip_g."""
    return f"{kind}.transformer."


def hf_clip_name(name: str) -> str:
    """A Hugging Face CLIP parameter name as files and ComfyUI carry it ("text_model.*", "text_projection.*"):
    newer transformers drop the "text_model." prefix in CLIPTextModel's own names."""
    return name if name.startswith(("text_model.", "text_projection")) else "text_model." + name


def clip_key_map(encoders: list[torch.nn.Module], kinds: list[str]) -> dict[str, tuple[int, str]]:
    """{ComfyUI key: (encoder index, parameter name)} for a CLIP's text encoders."""
    found: dict[str, tuple[int, str]] = {}
    for index, (module, kind) in enumerate(zip(encoders, kinds)):
        prefix = clip_prefix(kind)
        for name, _ in module.named_parameters():
            found[prefix + hf_clip_name(name)] = (index, name)
    return found


def filtered(mapping: dict[str, Any], prefix: str | None) -> dict[str, Any]:
    return mapping if prefix is None else {k: v for k, v in mapping.items() if k.startswith(prefix)}
