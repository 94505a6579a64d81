"""`comfy.lora` for plugins: LoRA key maps and patches over sdgraph's MODEL and CLIP, in ComfyUI's shape.

`model_lora_keys_unet(model)` / `model_lora_keys_clip(clip)` map every LoRA module stem sdgraph's LoraLoader
recognises (kohya's `lora_unet_*` / `lora_te*_`, diffusers/PEFT `unet.*` / `text_encoder*.`, ComfyUI's own
`diffusion_model.*` / `text_encoders.*`) to ComfyUI's weight key of that module. `load_lora(sd, key_map)` turns
a LoRA state dict into {weight key: patch}, which `add_patches` of a MODEL or CLIP applies; the result equals
LoraLoader with the same file. They take sdgraph's MODEL and CLIP themselves (ComfyUI's `model.model` and
`clip.cond_stage_model` inner objects do not exist here).
"""
from __future__ import annotations

import logging
from typing import Any

import torch

from sdgraph.nodes.sd.comfy_keys import clip_key_map, unet_key_map
from sdgraph.nodes.sd.lora import _stems_for_encoder, _stems_for_unet, parse_lora
from sdgraph.nodes.sd.model_objects import ClipModel, DiffusionModel

LOG = logging.getLogger("sdgraph.comfy_layer")


def _typed(value: Any, kind: type, where: str, what: str) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"comfy.lora.{where}: takes sdgraph's {what} itself, got {type(value).__name__} "
                        f"(ComfyUI's inner model objects are not provided)")
    return value


def model_lora_keys_unet(model: DiffusionModel, key_map: dict[str, Any] | None = None) -> dict[str, Any]:
    """key_map updated with {LoRA stem: "diffusion_model.<LDM module>.weight"} for the MODEL's UNet."""
    model = _typed(model, DiffusionModel, "model_lora_keys_unet", "MODEL")
    key_map = {} if key_map is None else key_map
    by_param = {param: key for key, param in unet_key_map(model.slot.module).items()}
    for stem, module in _stems_for_unet(model).items():
        key = by_param.get(module + ".weight")
        if key is not None:
            key_map[stem] = key
    return key_map


def model_lora_keys_clip(clip: ClipModel, key_map: dict[str, Any] | None = None) -> dict[str, Any]:
    """key_map updated with {LoRA stem: "<clip_l|clip_h|clip_g>.transformer.<HF module>.weight"}."""
    clip = _typed(clip, ClipModel, "model_lora_keys_clip", "CLIP")
    key_map = {} if key_map is None else key_map
    modules = [slot.module for slot in clip.encoders]
    by_param = {target: key for key, target in clip_key_map(modules, [s.kind for s in clip.specs]).items()}
    for index, module in enumerate(modules):
        for stem, name in _stems_for_encoder(module, index, len(modules), clip.specs[index].kind).items():
            key = by_param.get((index, name + ".weight"))
            if key is not None:
                key_map[stem] = key
    return key_map


def load_lora(lora: dict[str, torch.Tensor], to_load: dict[str, Any], log_missing: bool = True
              ) -> dict[Any, Any]:
    """{weight key: patch} for the LoRA modules whose stems `to_load` names: ("lora", (up, down, alpha, None,
    None, None)) for up/down pairs, ("diff", (tensor,)) for whole differences (`.diff` / `.diff_b`)."""
    raw = parse_lora(lora)
    patches: dict[Any, Any] = {}
    used: set[str] = set()
    for stem, key in to_load.items():
        factors = raw.get(stem)
        if factors is not None and factors[1] is not None:
            up, down, alpha = factors
            patches[key] = ("lora", (up, down, alpha, None, None, None))
            used.update(k for k in lora if k.startswith(stem + "."))
        for suffix, target in ((".diff", key), (".diff_b", _bias_of(key))):
            tensor = lora.get(stem + suffix)
            if tensor is not None and target is not None:
                patches[target] = ("diff", (tensor,))
                used.add(stem + suffix)
    if log_missing:
        for name in sorted(set(lora) - used):
            LOG.warning("comfy.lora.load_lora: lora key not loaded: %s", name)
    return patches


def _bias_of(key: Any) -> str | None:
    return key[: -len(".weight")] + ".bias" if isinstance(key, str) and key.endswith(".weight") else None
