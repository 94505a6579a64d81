"""LoRA files -> weight patches for the UNet and the text encoders.

Formats read:
- kohya: `lora_unet_<module>.lora_down.weight` / `.lora_up.weight` / `.alpha`, with `<module>` the diffusers or
  the original (LDM/SGM) UNet module path with dots as underscores; text encoders `lora_te_` (SD 1.x/2.x) or
  `lora_te1_` / `lora_te2_` (SDXL), module path of the Hugging Face CLIP model;
- diffusers / PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight` (and `text_encoder.`, `text_encoder_2.`),
  also with the `lora.down` / `lora.up` and `lora_linear_layer.down` / `.up` spellings;
- ComfyUI's own (what its LoraSave writes): `diffusion_model.<LDM module>.lora_up.weight` and
  `text_encoders.<clip_l|clip_h|clip_g>.transformer.<HF module>.lora_up.weight`, with whole differences of
  other weights as `<stem>.diff` (weight) and `<stem>.diff_b` (bias), added as key patches.

The delta of one module is `alpha / rank * up @ down` (scale 1 without alpha), times the strength. Linear and
convolution (1x1 and spatial "LoCon") layers are patched; other LoRA variants (LoHa, LoKr) are skipped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdgraph.models import file_key
from sdgraph.nodes.sd.comfy_keys import UNET_PREFIX, clip_prefix, hf_clip_name
from sdgraph.nodes.sd.ldm_names import unet_name_to_ldm
from sdgraph.nodes.sd.loading import read_state_dict
from sdgraph.nodes.sd.model_objects import ClipModel, DiffusionModel, LoraPatch

# stem -> (up, down, alpha); a whole difference is stored under its weight's ComfyUI key as (diff, None, None)
RawLora = dict[str, tuple[torch.Tensor, torch.Tensor | None, float | None]]
TEXT_ENCODERS = "text_encoders."
_DIFF_SUFFIXES = ((".diff", ".weight"), (".diff_b", ".bias"))
_SUFFIXES = ((".lora_up.weight", ".lora_down.weight"), (".lora_B.weight", ".lora_A.weight"),
             (".lora.up.weight", ".lora.down.weight"), (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"))


def read_lora(path: Path, manager: Any) -> tuple[str, RawLora]:
    """A LoRA file's (identity, up/down/alpha per module stem), read once while unchanged."""
    return manager.load(path, "lora", lambda p: (repr(file_key(p)), parse_lora(read_state_dict(p))))


def parse_lora(sd: dict[str, torch.Tensor]) -> RawLora:
    raw: RawLora = {}
    for key, value in sd.items():
        for suffix, target in _DIFF_SUFFIXES:
            if key.endswith(suffix):
                raw[key[: -len(suffix)].removeprefix(TEXT_ENCODERS) + target] = (value, None, None)
    for key, up in sd.items():
        for up_suffix, down_suffix in _SUFFIXES:
            if key.endswith(up_suffix):
                stem = key[: -len(up_suffix)]
                down = sd.get(stem + down_suffix)
                if down is not None:
                    alpha = sd.get(stem + ".alpha")
                    raw[stem] = (up, down, None if alpha is None else float(alpha))
                break
    return raw


def _patchable(module: torch.nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def _stems_for_unet(model: DiffusionModel) -> dict[str, str]:
    unet = model.slot.module
    config = dict(unet.config)
    stems: dict[str, str] = {}
    for name in _patchable(unet):
        stems["lora_unet_" + name.replace(".", "_")] = name
        stems["unet." + name] = name
        ldm = unet_name_to_ldm(name, config)
        if ldm is not None:
            stems["lora_unet_" + ldm.replace(".", "_")] = name
            stems[UNET_PREFIX + ldm] = name
    return stems


def _stems_for_encoder(module: torch.nn.Module, index: int, count: int, kind: str) -> dict[str, str]:
    kohya = ["lora_te_"] if count == 1 else [f"lora_te{index + 1}_"]
    peft = "text_encoder." if index == 0 else "text_encoder_2."
    stems: dict[str, str] = {}
    for name in _patchable(module):
        inner = name.removeprefix("text_model.")
        for form in (inner, "text_model." + inner):
            stems[peft + form] = name
            for prefix in kohya:
                stems[prefix + form.replace(".", "_")] = name
        stems[TEXT_ENCODERS + clip_prefix(kind) + hf_clip_name(inner)] = name
    return stems


def _diffs(raw: RawLora) -> dict[str, tuple[torch.Tensor]]:
    return {key: (up,) for key, (up, down, _) in raw.items() if down is None}


def _deltas(raw: RawLora, stems: dict[str, str]) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    out = {}
    for stem, (up, down, alpha) in raw.items():
        name = stems.get(stem)
        if name is not None and down is not None:
            rank = down.shape[0]
            out[name] = (up, down, (alpha / rank) if alpha is not None else 1.0)
    return out


def apply_lora(model: DiffusionModel | None, clip: ClipModel | None, identity: str, raw: RawLora,
               strength_model: float, strength_clip: float) -> tuple[DiffusionModel | None, ClipModel | None]:
    """New MODEL / CLIP values carrying the LoRA (the loaded modules are shared, never copied)."""
    if model is not None and strength_model != 0:
        deltas = _deltas(raw, _stems_for_unet(model))
        model = model.with_patch(LoraPatch(identity, strength_model, deltas))
        model.add_patches(_diffs(raw), strength_model)
    if clip is not None and strength_clip != 0:
        for i, slot in enumerate(clip.encoders):
            deltas = _deltas(raw, _stems_for_encoder(slot.module, i, len(clip.encoders), clip.specs[i].kind))
            if deltas:
                clip = clip.with_patch(i, LoraPatch(identity, strength_clip, deltas))
        clip = clip.clone()
        clip.add_patches(_diffs(raw), strength_clip)
    return model, clip


def unmatched_stems(raw: RawLora, model: DiffusionModel, clip: ClipModel | None = None) -> list[str]:
    """LoRA module stems that match no module (for diagnostics and tests)."""
    known = set(_stems_for_unet(model)) | set(model.model_state_dict())
    if clip is not None:
        known |= set(clip.model_state_dict())
        for i, slot in enumerate(clip.encoders):
            known |= set(_stems_for_encoder(slot.module, i, len(clip.encoders), clip.specs[i].kind))
    return sorted(s for s in raw if s not in known)
