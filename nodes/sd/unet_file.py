"""Load a UNet given on its own (ComfyUI's models/diffusion_models, models/unet) into a MODEL.

Layouts read:
- the original LDM names without the checkpoint's prefix, as ComfyUI saves a UNet (`input_blocks.0.0.weight`,
  ...), or with `diffusion_model.` / `model.diffusion_model.` still on them (a whole checkpoint is read for its
  UNet alone);
- the diffusers names (`conv_in.weight`, `down_blocks.*`, ...) in one file, as a diffusers folder's
  `diffusion_pytorch_model.safetensors` is;
- a diffusers UNet folder (`config.json` + weights).

Every layout is read through the LDM names, so the checkpoint loader's config inference and conversion serve it.
The family comes from the UNet alone: an SDXL-style size embedding (`label_emb`) means SDXL; it is the refiner's
when it takes OpenCLIP-G's pooled output (as wide as the context) plus five time ids, the base's (six ids)
otherwise. The time ids' Fourier width has no weights; SGM fixes it at 256 for both. Without `label_emb`, a
linear `proj_in` means SD 2.x, a convolution SD 1.x. The prediction type is guessed as for checkpoints
(`checkpoint_layout.guess_prediction_type`: a `v_pred` key, the file name, the SD 2.x norm-bias heuristic).

`weight_dtype` (ComfyUI's UNETLoader choices): "default" keeps the manager's precision for UNets (fp32 on the CPU,
fp16 on a GPU; an fp8 file is widened to it); "fp8_e4m3fn" and "fp8_e5m2" store the weights in that fp8 format
(a quarter of fp32's memory, half of fp16's) and widen each layer's weights to the compute precision while it
runs; "fp8_e4m3fn_fast" stores e4m3fn the same way. ComfyUI's fast variant also multiplies in fp8 on GPUs
with fp8 matrix units; sdgraph does not, so it computes exactly as "fp8_e4m3fn" does, which is what ComfyUI does
on hardware without them.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from sdgraph.nodes.sd import ldm_names
from sdgraph.nodes.sd.checkpoint_layout import (
    TIME_IDS, UNET_PREFIX, UnsupportedCheckpoint, family_defaults, guess_prediction_type, infer_unet_config,
)
from sdgraph.nodes.sd.empty_init import assign_weights, empty_weights
from sdgraph.nodes.sd.loading import diffusers_part, scheduler_schedule
from sdgraph.nodes.sd.model_objects import DiffusionModel, LatentFormat
from sdgraph.nodes.sd.weight_file import WeightFile, open_weights

WEIGHT_DTYPES = ("default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2")
STORED = {"default": None, "fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e4m3fn_fast": torch.float8_e4m3fn,
          "fp8_e5m2": torch.float8_e5m2}
SGM_TIME_ID_WIDTH = 256
LDM_MARKER = "input_blocks.0.0.weight"
LDM_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "")
DIFFUSERS_MARKERS = ("conv_in.weight", "time_embedding.linear_1.weight")
EXPECTED = ("expected an SD 1.x/2.x/XL UNet: LDM names (input_blocks.*, middle_block.*, output_blocks.*, with or "
            "without diffusion_model. before them) or diffusers names (conv_in.*, down_blocks.*, up_blocks.*)")


def load_unet(path: Path, manager: Any, weight_dtype: str = "default") -> DiffusionModel:
    """MODEL of a UNet-only file or diffusers UNet folder, cached by the manager per file and weight dtype."""
    if weight_dtype not in STORED:
        raise ValueError(f"weight_dtype {weight_dtype!r} is not one of {list(WEIGHT_DTYPES)}")
    stored = STORED[weight_dtype]
    return manager.load(path, "unet", lambda p: _load_uncached(p, manager, stored), options=(weight_dtype,))


def _load_uncached(path: Path, manager: Any, stored: torch.dtype | None) -> DiffusionModel:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    if path.is_dir():
        return _load_folder(path, manager, stored)
    sd = ldm_view(open_weights(path), path.name)
    family = unet_family(sd, path.name)
    config = unet_config(sd, family, path.name)
    with empty_weights():
        unet = UNet2DConditionModel(**config)
    weights = sd.cast(stored or manager.dtype_for_role("unet"))
    assign_weights(unet, convert_ldm_unet_checkpoint(weights, config), f"{path.name}: UNet")
    return _model(manager, path.name, unet, family, guess_prediction_type(sd, family, config, path.name), stored)


def _load_folder(path: Path, manager: Any, stored: torch.dtype | None) -> DiffusionModel:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    config_file = path / "config.json"
    if json.loads(config_file.read_text()).get("_class_name") != "UNet2DConditionModel":
        raise UnsupportedCheckpoint(f"{path.name}: its config.json is not a diffusers UNet2DConditionModel's")
    unet = diffusers_part(UNet2DConditionModel, path, manager.dtype_for_role("unet"))
    sd = ldm_names.unet_to_ldm(unet.state_dict(), dict(unet.config))
    family = unet_family(sd, path.name)
    prediction = guess_prediction_type(sd, family, dict(unet.config), path.name)
    return _model(manager, path.name, unet, family, prediction, stored)


def _model(manager: Any, name: str, unet: torch.nn.Module, family: str, prediction: str,
           stored: torch.dtype | None) -> DiffusionModel:
    defaults = family_defaults(family)
    alphas, _ = scheduler_schedule(defaults["scheduler"])
    slot = manager.manage(unet, f"{name}:unet", "unet", stored_dtype=stored)
    return DiffusionModel(slot=slot, prediction_type=prediction, alphas_cumprod=alphas, is_sdxl=family in TIME_IDS,
                          is_sdxl_refiner=family == "sdxl_refiner",
                          latent_channels=int(unet.config.out_channels),
                          latent_format=LatentFormat.from_vae_config(defaults["vae"]), name=name)


# ---- layouts ------------------------------------------------------------------------------------------------


def renamed(sd: WeightFile, names: dict[str, str]) -> WeightFile:
    """A view of `sd` whose keys are `names`' keys, each reading the tensor its value names."""
    return WeightFile(sd.name, list(names), lambda key: sd[names[key]])


def ldm_view(sd: WeightFile, name: str) -> WeightFile:
    """The UNet's tensors under the checkpoint names (`model.diffusion_model.` + LDM name), from either layout."""
    prefix = next((p for p in LDM_PREFIXES if p + LDM_MARKER in sd), None)
    if prefix is not None:
        names = {UNET_PREFIX + k[len(prefix):]: k for k in sd if k.startswith(prefix)}
    elif all(k in sd for k in DIFFUSERS_MARKERS):
        names = {UNET_PREFIX + ldm: k for k, ldm in diffusers_to_ldm_names(list(sd), name).items()}
    else:
        raise UnsupportedCheckpoint(f"{name}: {_what_it_is(list(sd))}; {EXPECTED}")
    if "v_pred" in sd:
        names["v_pred"] = "v_pred"
    return renamed(sd, names)


def diffusers_to_ldm_names(keys: list[str], name: str) -> dict[str, str]:
    """{diffusers key: LDM name} for a diffusers-layout UNet's keys."""
    levels = {int(m.group(1)) for k in keys if (m := re.match(r"up_blocks\.(\d+)\.", k))}
    config = {"layers_per_block": len({m.group(1) for k in keys
                                       if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", k))}),
              "up_block_types": ["CrossAttnUpBlock2D" if any(k.startswith(f"up_blocks.{i}.attentions.") for k in keys)
                                 else "UpBlock2D" for i in range(max(levels, default=-1) + 1)]}
    out, unknown = {}, []
    for key in keys:
        ldm = ldm_names.unet_name_to_ldm(key, config)
        if ldm is None:
            unknown.append(key)
        else:
            out[key] = ldm
    if unknown:
        raise UnsupportedCheckpoint(f"{name}: diffusers UNet keys with no SD 1.x/2.x/XL counterpart, e.g. "
                                    f"{unknown[:3]}")
    return out


def _what_it_is(keys: list[str]) -> str:
    if any(k.startswith(("double_blocks.", "single_blocks.", "joint_blocks.", "transformer_blocks.")) for k in keys):
        return "a transformer diffusion model (Flux, SD3 or similar), which sdgraph does not run"
    if any(k.startswith(("lora_unet_", "lora_te")) or ".lora_down." in k or ".lora_A." in k for k in keys):
        return "a LoRA (load it with LoraLoader from models/loras)"
    if any(k.startswith(("encoder.down.", "first_stage_model.", "decoder.up_blocks.")) for k in keys):
        return "a VAE (load it with VAELoader from models/vae)"
    if any("text_model." in k or "token_embedding" in k for k in keys):
        return "a text encoder (load it with CLIPLoader from models/text_encoders)"
    sample = ", ".join(keys[:3]) or "no tensors"
    return f"no UNet keys (first keys: {sample})"


# ---- family and config --------------------------------------------------------------------------------------


def unet_family(sd: WeightFile | dict[str, torch.Tensor], name: str) -> str:
    """"sd1", "sd2", "sdxl" or "sdxl_refiner", from the UNet's own weights (LDM names)."""
    label = sd.get(UNET_PREFIX + "label_emb.0.0.weight")
    context = _context_width(sd)
    if label is not None:
        adm = int(label.shape[1])
        refiner = adm - TIME_IDS["sdxl_refiner"] * SGM_TIME_ID_WIDTH == context
        if not refiner and adm <= TIME_IDS["sdxl"] * SGM_TIME_ID_WIDTH:
            raise UnsupportedCheckpoint(f"{name}: its size embedding (label_emb) takes {adm} inputs, fewer than "
                                        f"SDXL's pooled text embedding and six {SGM_TIME_ID_WIDTH}-wide time ids")
        return "sdxl_refiner" if refiner else "sdxl"
    proj_in = next((k for k in sd if k.startswith(UNET_PREFIX) and k.endswith(".proj_in.weight")), None)
    return "sd2" if proj_in is not None and sd[proj_in].dim() == 2 else "sd1"


def _context_width(sd: WeightFile | dict[str, torch.Tensor]) -> int | None:
    key = next((k for k in sd if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight")), None)
    return None if key is None else int(sd[key].shape[1])


def unet_config(sd: WeightFile, family: str, name: str) -> dict[str, Any]:
    defaults = family_defaults(family)
    config = infer_unet_config(sd, UNET_PREFIX, defaults["unet"], defaults["head_rule"])
    if config.get("in_channels", 4) == 9:
        raise UnsupportedCheckpoint(f"{name}: an inpainting UNet (9 input channels), which is not supported yet")
    return config
