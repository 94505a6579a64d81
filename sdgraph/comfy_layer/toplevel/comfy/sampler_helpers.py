"""`comfy.sampler_helpers` for plugins: the helpers packs call around sampling.

`prepare_mask` resizes a noise mask to a latent's shape; `convert_cond` gives CONDITIONING entries as the dicts
ComfyUI's sampler works on. Model preparation for ComfyUI's sampler (additional models, hooks) is sdgraph's
executor's business and is not provided.
"""
from __future__ import annotations

import uuid
from typing import Any

import torch

from sdgraph.comfy_layer import unsupported

import comfy.utils


def prepare_mask(noise_mask: torch.Tensor, shape: tuple[int, ...], device: Any) -> torch.Tensor:
    """A mask [B, H, W] (or [B, 1, H, W]) as [shape[0], shape[1], H', W'] of the latent's size, on device."""
    return comfy.utils.reshape_mask(noise_mask, shape).to(device)


def convert_cond(cond: list) -> list[dict[str, Any]]:
    """Each [tensor, extras] entry as a dict: the extras with "cross_attn" (the tensor), "model_conds" and a
    fresh "uuid"."""
    out = []
    for entry in cond:
        item = dict(entry[1])
        if entry[0] is not None:
            item["cross_attn"] = entry[0]
        item["model_conds"] = item.get("model_conds", {})
        item["uuid"] = uuid.uuid4()
        out.append(item)
    return out


def get_models_from_cond(cond: list[dict[str, Any]], model_type: str) -> list[Any]:
    found: list[Any] = []
    for entry in cond:
        if model_type in entry:
            value = entry[model_type]
            found += value if isinstance(value, list) else [value]
    return found


unsupported.define(globals(), "ComfyUI's sampler model preparation (sdgraph's executor prepares models)",
                   ("get_additional_models", "get_additional_models_from_model_options", "cleanup_additional_models",
                    "prepare_sampling", "cleanup_models", "prepare_model_patcher", "estimate_memory",
                    "get_hooks_from_cond"))
