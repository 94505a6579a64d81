"""Write models in the file layouts ComfyUI and the SD ecosystem read: single-file checkpoints (original LDM / SGM
key names), UNet-only, text-encoder-only and VAE-only files. Weights are written with every patch the value
carries (LoRA, merges) applied, in the precision they compute in.

Layouts (what ComfyUI's savers write, so its loaders read them back):
- checkpoint: "model.diffusion_model." UNet, "first_stage_model." VAE, and the text encoders under
  "cond_stage_model.transformer." (SD 1.x, Hugging Face names), "cond_stage_model.model." (SD 2.x, OpenCLIP
  names), "conditioner.embedders.0.transformer." + "conditioner.embedders.1.model." (SDXL) or
  "conditioner.embedders.0.model." (SDXL refiner); a v-prediction model also gets the marker key "v_pred";
- UNet only: the same "model.diffusion_model." keys alone;
- text encoder: one file per encoder, Hugging Face names ("text_model.*", "text_projection.weight");
- VAE: the LDM VAE names without prefix ("encoder.down.0.block.0...").
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from sdgraph.nodes.sd.checkpoint_layout import OPEN_CLIP_PREFIX
from sdgraph.nodes.sd.comfy_keys import hf_clip_name
from sdgraph.nodes.sd.image_files import next_counter, output_folder, write_new
from sdgraph.nodes.sd.ldm_names import clip_to_ldm, open_clip_to_ldm, unet_to_ldm, vae_to_ldm
from sdgraph.nodes.sd.model_objects import ClipModel, DiffusionModel, VaeModel
from sdgraph.nodes.sd.weight_file import open_weights

StateDict = dict[str, torch.Tensor]
# CLIP kinds -> the checkpoint prefix and layout of each encoder
_CLIP_LAYOUTS: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {
    ("clip_l",): (("cond_stage_model.transformer.", "hf"),),
    ("clip_h",): (("cond_stage_model.model.", "open_clip"),),
    ("clip_l", "clip_g"): (("conditioner.embedders.0.transformer.", "hf"), ("conditioner.embedders.1.model.", "open_clip")),
    ("clip_g",): (("conditioner.embedders.0.model.", "open_clip"),),
}


def _cpu_state(module: torch.nn.Module) -> StateDict:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()
            if not k.endswith("position_ids")}


def unet_state(model: DiffusionModel) -> StateDict:
    """The patched UNet under "model.diffusion_model." LDM names."""
    unet = model.unet()
    return unet_to_ldm(_cpu_state(unet), dict(unet.config))


def clip_kinds(clip: ClipModel) -> tuple[str, ...]:
    return tuple(spec.kind for spec in clip.specs[:len(clip.encoders)])


def hf_clip_names(state: StateDict) -> StateDict:
    """The state under the Hugging Face CLIP names files carry (`comfy_keys.hf_clip_name`)."""
    return {hf_clip_name(k): v for k, v in state.items()}


def clip_checkpoint_state(clip: ClipModel) -> StateDict:
    """The patched text encoders under their checkpoint prefixes."""
    layouts = _CLIP_LAYOUTS.get(clip_kinds(clip))
    if layouts is None:
        raise ValueError(f"cannot write text encoders {clip_kinds(clip)} in a checkpoint layout")
    out: StateDict = {}
    for index, (prefix, layout) in enumerate(layouts):
        state = hf_clip_names(_cpu_state(clip.encoder(index)))
        if layout == "hf":
            out.update(clip_to_ldm(state, prefix))
        else:
            out.update(open_clip_to_ldm(state, prefix))
            out.update(_dropped_layers(clip, index, prefix))
    return out


def _dropped_layers(clip: ClipModel, index: int, prefix: str) -> StateDict:
    """The OpenCLIP layers the loader left out (SD 2.x's last one, never used for conditioning), read again
    from the file the encoder came from, so a saved checkpoint has the depth its architecture expects."""
    spec, slot = clip.specs[index], clip.encoders[index]
    if not spec.dropped_layers:
        return {}
    source = slot.entry.path if slot.entry is not None else None
    if source is None or source.is_dir() or not source.exists():
        raise ValueError(f"{clip.name}: its text encoder's last {spec.dropped_layers} layer(s) were not loaded and "
                         "the file it came from is gone, so it cannot be saved as a full checkpoint")
    weights = open_weights(source)
    starts = [p + "transformer.resblocks." for p in OPEN_CLIP_PREFIX.values()]
    original = next((p for p in starts if p + "0.ln_1.weight" in weights), None)
    if original is None:
        raise ValueError(f"{clip.name}: {source.name} holds no OpenCLIP text encoder to take its last layers from")
    kept = clip.encoder(index).config.num_hidden_layers
    out: StateDict = {}
    for key in weights.keys():
        if key.startswith(original) and int(key[len(original):].split(".")[0]) >= kept:
            out[prefix + "transformer.resblocks." + key[len(original):]] = weights[key].contiguous()
    return out


def clip_encoder_states(clip: ClipModel) -> dict[str, StateDict]:
    """{kind: patched weights in Hugging Face names} for each text encoder."""
    return {kind: hf_clip_names(_cpu_state(clip.encoder(i))) for i, kind in enumerate(clip_kinds(clip))}


def vae_state(vae: VaeModel, prefix: str = "") -> StateDict:
    module = vae.module()
    return vae_to_ldm(_cpu_state(module), len(module.config["block_out_channels"]), prefix)


def checkpoint_state(model: DiffusionModel, clip: ClipModel | None, vae: VaeModel | None) -> StateDict:
    state = unet_state(model)
    if clip is not None:
        state.update(clip_checkpoint_state(clip))
    if vae is not None:
        state.update(vae_state(vae, "first_stage_model."))
    if model.prediction_type == "v_prediction":
        state["v_pred"] = torch.tensor([])
    return state


def architecture(model: DiffusionModel) -> str | None:
    """The modelspec architecture ComfyUI records for SDXL files (none for SD 1.x / 2.x, as in ComfyUI)."""
    if model.is_sdxl_refiner:
        return "stable-diffusion-xl-v1-refiner"
    if model.is_sdxl:
        return "stable-diffusion-xl-v1-base"
    return None


def workflow_metadata(prompt: Any, extra_pnginfo: Any) -> dict[str, str]:
    """The prompt and each extra_pnginfo entry (the UI workflow) as JSON strings, as ComfyUI stores them."""
    metadata = {"prompt": json.dumps(prompt) if prompt is not None else ""}
    for key, value in (extra_pnginfo or {}).items():
        metadata[str(key)] = json.dumps(value)
    return metadata


def write_safetensors(root: Path, prefix: str, state: StateDict, metadata: dict[str, str] | None) -> Path:
    """Save under `<prefix>_<counter:05>_.safetensors` in root (never overwriting); the path written."""
    folder, _, stem = output_folder(root, prefix)
    data = _shared_free(state)
    name, _ = write_new(folder, stem, ".safetensors", next_counter(folder, stem, ".safetensors"),
                        lambda f: save_file(data, f.name, metadata=metadata))  # the name is ours: written in place
    return folder / name


def _shared_free(state: StateDict) -> StateDict:
    """safetensors refuses tensors sharing memory: give each its own copy where they do."""
    seen: set[int] = set()
    out: StateDict = {}
    for key, value in state.items():
        ptr = value.data_ptr() if value.numel() else -1
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out
