"""Tiny random-weight Stable Diffusion models, saved in the real file layouts the loaders read.

- `sd1-tiny.safetensors`, `sd2-tiny-v.safetensors`, `sdxl-tiny.safetensors`, `sdxl-refiner-tiny.safetensors`:
  original single-file checkpoints (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*` /
  `conditioner.embedders.*`); the refiner has the real refiner's structure in small (four levels, attention on
  the middle two, OpenCLIP-G alone under `conditioner.embedders.0.model.`, label_emb of pooled + 5 time ids);
- `sd1-tiny-diffusers/`: a diffusers folder (model_index.json, unet/ vae/ text_encoder/ scheduler/), fp16 weights;
- `vae/tiny-vae.safetensors` (LDM layout), `loras/tiny-lora.safetensors` (kohya keys, UNet and text encoder),
  `controlnet/tiny-controlnet/` (a diffusers ControlNetModel folder whose zero convolutions are not zero).

Sizes follow the family rules the loader infers from (SD 1.x: 8 heads; SD 2.x/XL and CLIP: one head per 64
channels; GroupNorm with 32 groups), so a model saved here loads back bit for bit.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from sdgraph.nodes.sd import ldm_names

TEXT = 64
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [32, 32, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 1, "norm_num_groups": 32, "sample_size": 64, "scaling_factor": 0.18215,
}
SD1_UNET: dict[str, Any] = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1, "cross_attention_dim": TEXT, "attention_head_dim": 8, "norm_num_groups": 32,
}
SD2_UNET: dict[str, Any] = dict(SD1_UNET, block_out_channels=[64, 128], attention_head_dim=[1, 2],
                                use_linear_projection=True)
SDXL_UNET: dict[str, Any] = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": [64, 128],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"], "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1, "cross_attention_dim": 2 * TEXT, "attention_head_dim": [1, 2],
    "transformer_layers_per_block": [1, 2], "norm_num_groups": 32, "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": TEXT + 6 * 8,
}
REFINER_TIME_DIM = 8
SDXL_REFINER_UNET: dict[str, Any] = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "block_out_channels": [32, 64, 64, 64],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2, "cross_attention_dim": TEXT, "attention_head_dim": 1, "transformer_layers_per_block": 2,
    "norm_num_groups": 32, "use_linear_projection": True, "addition_embed_type": "text_time",
    "addition_time_embed_dim": REFINER_TIME_DIM, "projection_class_embeddings_input_dim": TEXT + 5 * REFINER_TIME_DIM,
}


def clip_config(act: str = "quick_gelu", layers: int = 2) -> dict[str, Any]:
    return {"vocab_size": 49408, "hidden_size": TEXT, "intermediate_size": 2 * TEXT, "num_hidden_layers": layers,
            "num_attention_heads": 1, "max_position_embeddings": 77, "hidden_act": act, "projection_dim": TEXT,
            "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407}


@dataclass
class TinyParts:
    unet: torch.nn.Module
    vae: torch.nn.Module
    encoders: list[torch.nn.Module]


def _randomize(module: torch.nn.Module, scale: float = 0.05) -> None:
    """Give every norm bias and zero-initialised weight some random values, so nothing is trivially zero."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.abs().sum() == 0:
                p.normal_(0, scale)


def build_parts(kind: str, seed: int = 0, width: int = 1) -> TinyParts:
    """Random tiny parts of a family; `width` multiplies the SD 1.x UNet's channels (larger files for benches)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet_cfg = {"sd1": SD1_UNET, "sd2": SD2_UNET, "sdxl": SDXL_UNET, "sdxl_refiner": SDXL_REFINER_UNET}[kind]
    if width != 1:
        unet_cfg = dict(unet_cfg, block_out_channels=[c * width for c in unet_cfg["block_out_channels"]])
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**dict(VAE_CONFIG, scaling_factor=0.13025 if kind.startswith("sdxl") else 0.18215))
    if kind == "sd1":
        encoders = [CLIPTextModel(CLIPTextConfig(**clip_config()))]
    elif kind == "sd2":  # stored with OpenCLIP's extra last layer, which the loader drops
        encoders = [CLIPTextModel(CLIPTextConfig(**clip_config("gelu", 3)))]
    elif kind == "sdxl_refiner":  # three layers, so the penultimate one it reads is a middle one
        encoders = [CLIPTextModelWithProjection(CLIPTextConfig(**clip_config("gelu", 3)))]
    else:
        encoders = [CLIPTextModel(CLIPTextConfig(**clip_config())),
                    CLIPTextModelWithProjection(CLIPTextConfig(**clip_config("gelu")))]
    for m in (unet, vae, *encoders):
        _randomize(m)
        m.eval()
    return TinyParts(unet, vae, encoders)


def single_file_state(kind: str, parts: TinyParts) -> dict[str, torch.Tensor]:
    unet_cfg = dict(parts.unet.config)
    sd = ldm_names.unet_to_ldm(parts.unet.state_dict(), unet_cfg)
    sd.update(ldm_names.vae_to_ldm(parts.vae.state_dict(), len(VAE_CONFIG["block_out_channels"])))
    if kind == "sd1":
        sd.update(ldm_names.clip_to_ldm(parts.encoders[0].state_dict(), "cond_stage_model.transformer."))
    elif kind == "sd2":
        sd.update(ldm_names.open_clip_to_ldm(parts.encoders[0].state_dict(), "cond_stage_model.model."))
    elif kind == "sdxl_refiner":
        sd.update(ldm_names.open_clip_to_ldm(parts.encoders[0].state_dict(), "conditioner.embedders.0.model."))
    else:
        sd.update(ldm_names.clip_to_ldm(parts.encoders[0].state_dict(), "conditioner.embedders.0.transformer."))
        sd.update(ldm_names.open_clip_to_ldm(parts.encoders[1].state_dict(), "conditioner.embedders.1.model."))
    return {k: v.contiguous() for k, v in sd.items() if not k.endswith("position_ids")}


def save_single_file(path: Path, kind: str, parts: TinyParts) -> None:
    save_file(single_file_state(kind, parts), str(path))


def save_diffusers_folder(folder: Path, parts: TinyParts, dtype: torch.dtype = torch.float16) -> None:
    import diffusers
    from diffusers import DDPMScheduler

    folder.mkdir(parents=True, exist_ok=True)
    for name, module in (("unet", parts.unet), ("vae", parts.vae), ("text_encoder", parts.encoders[0])):
        copy = type(module)(module.config) if name == "text_encoder" else type(module).from_config(module.config)
        copy.load_state_dict(module.state_dict())
        copy.to(dtype).save_pretrained(folder / name)
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).save_pretrained(folder / "scheduler")
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
             "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"]}
    (folder / "model_index.json").write_text(json.dumps(index))


def save_kohya_lora(path: Path, unet: torch.nn.Module, encoder: torch.nn.Module, rank: int = 4, seed: int = 1) -> None:
    """A kohya-format LoRA on every UNet attention projection and every text encoder q/k/v/out projection."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}

    def add(stem: str, module: torch.nn.Linear) -> None:
        out[f"{stem}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=gen) * 0.3
        out[f"{stem}.lora_up.weight"] = torch.randn(module.out_features, rank, generator=gen) * 0.3
        out[f"{stem}.alpha"] = torch.tensor(float(rank / 2))

    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and (".attn1." in name or ".attn2." in name):
            add("lora_unet_" + name.replace(".", "_"), module)
    for name, module in encoder.named_modules():
        if isinstance(module, torch.nn.Linear) and ".self_attn." in name:
            add("lora_te_text_model_" + name.replace(".", "_"), module)
    save_file(out, str(path))


def save_controlnet(folder: Path, unet: torch.nn.Module, seed: int = 2) -> torch.nn.Module:
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 64, 128))
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                p.normal_(0, 0.2)
    net.save_pretrained(folder)
    return net


def save_ldm_vae(path: Path, vae: torch.nn.Module) -> None:
    save_file({k: v.contiguous() for k, v in ldm_names.vae_to_ldm(vae.state_dict(), 4, prefix="").items()}, str(path))


def build_model_tree(root: Path) -> dict[str, Any]:
    """Write every tiny model under `root/models/...`; return the in-memory originals for comparisons."""
    models = root / "models"
    for sub in ("checkpoints", "vae", "loras", "controlnet"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    sd1, sd2, sdxl = build_parts("sd1", 0), build_parts("sd2", 1), build_parts("sdxl", 2)
    refiner = build_parts("sdxl_refiner", 3)
    with torch.no_grad():  # make the tiny SD 2.x look like a 768-v model to the norm-bias heuristic
        sd2.unet.up_blocks[-1].attentions[-1].transformer_blocks[0].norm1.bias.normal_(0, 0.5)
    save_single_file(models / "checkpoints" / "sd1-tiny.safetensors", "sd1", sd1)
    save_single_file(models / "checkpoints" / "sd2-tiny.safetensors", "sd2", sd2)
    save_single_file(models / "checkpoints" / "sdxl-tiny.safetensors", "sdxl", sdxl)
    save_single_file(models / "checkpoints" / "sdxl-refiner-tiny.safetensors", "sdxl_refiner", refiner)
    save_diffusers_folder(models / "checkpoints" / "sd1-tiny-diffusers", sd1)
    save_ldm_vae(models / "vae" / "tiny-vae.safetensors", sd1.vae)
    save_kohya_lora(models / "loras" / "tiny-lora.safetensors", sd1.unet, sd1.encoders[0])
    controlnet = save_controlnet(models / "controlnet" / "tiny-controlnet", sd1.unet)
    return {"sd1": sd1, "sd2": sd2, "sdxl": sdxl, "sdxl_refiner": refiner, "controlnet": controlnet}


def save_many_checkpoints(folder: Path, count: int, first_seed: int = 100, width: int = 1) -> list[Path]:
    """`count` different tiny SD 1.x single-file checkpoints (seeds `first_seed`...), for RAM-budget soaks."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"soak-{i:03d}{'' if width == 1 else f'-w{width}'}.safetensors"
        if not path.exists():
            save_single_file(path, "sd1", build_parts("sd1", first_seed + i, width))
        paths.append(path)
    return paths
