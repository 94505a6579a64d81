"""Read an original single-file Stable Diffusion checkpoint's key layout: which family it is, and its configs.

Families are told apart by the text encoder's keys (weights carry no architecture flag):

- SD 1.x: `cond_stage_model.transformer.*` (OpenAI CLIP ViT-L, Hugging Face layout);
- SD 2.x: `cond_stage_model.model.*` (OpenCLIP ViT-H, open_clip layout);
- SDXL base: `conditioner.embedders.0.transformer.*` (CLIP-L) + `conditioner.embedders.1.model.*` (OpenCLIP bigG);
- SDXL refiner: `conditioner.embedders.0.model.*` (OpenCLIP bigG alone); its UNet's `label_emb` takes the pooled
  text embedding and five Fourier-embedded time ids (size, crop, aesthetic score) where the base takes six.

The diffusers configs start from the family's shipped defaults (`sdgraph/data/configs/<family>.json`) and take
every size that the weights determine from their shapes (channels, blocks per level, attention levels,
transformer depth, context width, text encoder widths and depths), so scaled-down checkpoints load too. What
shapes cannot tell is taken from the family: the number of attention heads (SD 1.x: 8 per block; SD 2.x and
SDXL: one head per 64 channels; CLIP: one head per 64 channels) and GroupNorm's 32 groups.

Prediction type (v-prediction is not recorded in the weights): in order,
1. a `v_pred` key in the checkpoint (the marker some v-prediction fine-tunes carry) -> v_prediction;
2. the file name containing "v-pred", "vpred" or "768-v" -> v_prediction; containing "eps" -> epsilon;
3. SD 2.x non-inpainting models: the std of the last up-block transformer's `norm1.bias` above 0.09 means a
   768-v model (ComfyUI's heuristic; SD 2.x-base 512 models are epsilon, the 768 models are v);
4. otherwise epsilon.
"""
from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sdgraph.paths import PACKAGE_DATA

CONFIG_DIR = PACKAGE_DATA / "configs"
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.", "vae.")
SD1_CLIP = "cond_stage_model.transformer."
SD2_CLIP = "cond_stage_model.model."
SDXL_CLIP_L = "conditioner.embedders.0.transformer."
SDXL_CLIP_G = "conditioner.embedders.1.model."
SDXL_REFINER_CLIP_G = "conditioner.embedders.0.model."
OPEN_CLIP_PREFIX = {"sd2": SD2_CLIP, "sdxl": SDXL_CLIP_G, "sdxl_refiner": SDXL_REFINER_CLIP_G}
TIME_IDS = {"sdxl": 6, "sdxl_refiner": 5}  # base: size, crop, target size; refiner: size, crop, aesthetic score

StateDict = dict[str, torch.Tensor]


class UnsupportedCheckpoint(ValueError):
    """A checkpoint whose layout is not one sdgraph can load."""


@dataclass
class CheckpointLayout:
    family: str  # "sd1" | "sd2" | "sdxl" | "sdxl_refiner"
    prediction_type: str
    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoders: list[dict[str, Any]]
    scheduler: dict[str, Any]
    default_clip_skip: list[int] = field(default_factory=list)
    final_norm: list[bool] = field(default_factory=list)
    dropped_layers: list[int] = field(default_factory=list)

    @property
    def is_sdxl(self) -> bool:
        return self.family in TIME_IDS

    @property
    def is_sdxl_refiner(self) -> bool:
        return self.family == "sdxl_refiner"

    @property
    def is_inpaint(self) -> bool:
        return self.unet.get("in_channels", 4) == 9


def family_defaults(family: str) -> dict[str, Any]:
    return json.loads((CONFIG_DIR / f"{family}.json").read_text())


def detect_family(sd: StateDict) -> str:
    has = lambda prefix: any(k.startswith(prefix) for k in sd)  # noqa: E731
    if not has(UNET_PREFIX):
        raise UnsupportedCheckpoint("no UNet weights (model.diffusion_model.*): not a full SD checkpoint")
    if has(SDXL_CLIP_G) and has(SDXL_CLIP_L):
        return "sdxl"
    if has(SDXL_REFINER_CLIP_G) and not has(SDXL_CLIP_G):
        return "sdxl_refiner"
    if has(SD2_CLIP):
        return "sd2"
    if has(SD1_CLIP):
        return "sd1"
    raise UnsupportedCheckpoint("no recognised text encoder keys: cannot tell SD 1.x / 2.x / XL apart")


def read_layout(sd: StateDict, filename: str = "") -> CheckpointLayout:
    family = detect_family(sd)
    defaults = family_defaults(family)
    encoders = _text_encoder_configs(sd, family, defaults["text_encoders"])
    pooled_dim = encoders[-1].get("projection_dim", 0) if family in TIME_IDS else 0
    unet = infer_unet_config(sd, UNET_PREFIX, defaults["unet"], defaults["head_rule"], pooled_dim,
                             TIME_IDS.get(family, 6))
    if family == "sdxl_refiner":
        _check_refiner_unet(sd, unet, encoders[0])
    if family in ("sd1", "sd2") and "projection_class_embeddings_input_dim" in unet:
        unet["class_embed_type"] = "projection"  # unCLIP: label_emb takes the noised image embedding (`unclip`)
    vae = infer_vae_config(sd, _vae_prefix(sd), defaults["vae"])
    scheduler = dict(defaults["scheduler"])
    prediction = guess_prediction_type(sd, family, unet, filename)
    scheduler["prediction_type"] = prediction
    return CheckpointLayout(family, prediction, unet, vae, encoders, scheduler,
                            list(defaults["default_clip_skip"]), list(defaults["final_norm"]),
                            list(defaults.get("dropped_layers", [0] * len(encoders))))


def guess_prediction_type(sd: StateDict, family: str, unet: dict[str, Any], filename: str = "") -> str:
    if "v_pred" in sd:
        return "v_prediction"
    name = filename.lower()
    if re.search(r"v[-_]?pred|768[-_]v\b", name):
        return "v_prediction"
    if re.search(r"(^|[-_.])eps([-_.]|$)", name):
        return "epsilon"
    if family == "sd2" and unet.get("in_channels", 4) == 4:
        bias = _last_up_norm1_bias(sd)
        if bias is not None and torch.std(bias.float(), unbiased=False) > 0.09:
            return "v_prediction"
    return "epsilon"


def _last_up_norm1_bias(sd: StateDict) -> torch.Tensor | None:
    pattern = re.compile(re.escape(UNET_PREFIX) + r"output_blocks\.(\d+)\.1\.transformer_blocks\.0\.norm1\.bias$")
    found = sorted((int(m.group(1)), k) for k in sd if (m := pattern.match(k)))
    return sd[found[-1][1]] if found else None


def _vae_prefix(sd: StateDict) -> str:
    for prefix in VAE_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            return prefix
    raise UnsupportedCheckpoint("no VAE weights (first_stage_model.*) in the checkpoint")


# ---- UNet -------------------------------------------------------------------------------------------------


def _count(sd: StateDict, pattern: str) -> int:
    """How many distinct integers fill `{}` in keys matching the pattern (a prefix with one `{}`)."""
    regex = re.compile(re.escape(pattern).replace(r"\{\}", r"(\d+)"))
    return len({m.group(1) for k in sd if (m := regex.match(k))})


def infer_unet_config(sd: StateDict, prefix: str, defaults: dict[str, Any], head_rule: dict[str, int],
                      pooled_dim: int = 0, time_ids: int = 6) -> dict[str, Any]:
    """A UNet2DConditionModel config from LDM-layout UNet weights (prefix `model.diffusion_model.`)."""
    p = prefix
    conv_in = sd[p + "input_blocks.0.0.weight"]
    levels = _unet_levels(sd, p)
    layers_per_block = len(levels[0]["blocks"])
    block_out = [lvl["channels"] for lvl in levels]
    depth = [_transformer_depth(sd, f"{p}input_blocks.{lvl['blocks'][0]}.1.") if lvl["attn"] else 1
             for lvl in levels]
    mid_depth = _transformer_depth(sd, f"{p}middle_block.1.")
    if mid_depth and not levels[-1]["attn"]:  # diffusers sizes the mid block by the last level's depth
        depth[-1] = mid_depth
    cfg = copy.deepcopy(defaults)
    cfg.update(
        in_channels=int(conv_in.shape[1]),
        out_channels=int(sd[p + "out.2.weight"].shape[0]),
        block_out_channels=block_out,
        layers_per_block=layers_per_block,
        down_block_types=["CrossAttnDownBlock2D" if lvl["attn"] else "DownBlock2D" for lvl in levels],
        up_block_types=["CrossAttnUpBlock2D" if lvl["attn"] else "UpBlock2D" for lvl in reversed(levels)],
        transformer_layers_per_block=depth if len(set(depth)) > 1 else depth[0],
        attention_head_dim=_heads(block_out, head_rule),
    )
    if mid_depth and mid_depth != depth[-1]:
        raise UnsupportedCheckpoint(f"mid-block transformer depth {mid_depth} differs from the last level's")
    to_k = next((v for k, v in sd.items() if k.startswith(p) and k.endswith("attn2.to_k.weight")), None)
    if to_k is not None:
        cfg["cross_attention_dim"] = int(to_k.shape[1])
    proj_in = next((v for k, v in sd.items() if k.startswith(p) and k.endswith(".proj_in.weight")), None)
    if proj_in is not None:
        cfg["use_linear_projection"] = proj_in.dim() == 2
    time_dim = int(sd[p + "time_embed.0.weight"].shape[0])
    if time_dim != block_out[0] * 4:
        cfg["time_embedding_dim"] = time_dim
    if p + "label_emb.0.0.weight" in sd:
        adm = int(sd[p + "label_emb.0.0.weight"].shape[1])
        cfg["projection_class_embeddings_input_dim"] = adm
        if pooled_dim and (adm - pooled_dim) % time_ids == 0:
            cfg["addition_time_embed_dim"] = (adm - pooled_dim) // time_ids
    return cfg


def _check_refiner_unet(sd: StateDict, unet: dict[str, Any], clip_g: dict[str, Any]) -> None:
    """The refiner's UNet reads OpenCLIP-G's hidden states and its pooled output plus five time ids."""
    where = "SDXL refiner checkpoint"
    if UNET_PREFIX + "label_emb.0.0.weight" not in sd:
        raise UnsupportedCheckpoint(f"{where}: no {UNET_PREFIX}label_emb.0.0.weight (the size/score embedding)")
    adm, pooled = unet["projection_class_embeddings_input_dim"], clip_g["projection_dim"]
    if adm <= pooled or (adm - pooled) % 5:
        raise UnsupportedCheckpoint(f"{where}: label_emb takes {adm} inputs, not the pooled {pooled} + 5 time ids")
    if unet.get("cross_attention_dim") != clip_g["hidden_size"]:
        raise UnsupportedCheckpoint(f"{where}: the UNet's context width {unet.get('cross_attention_dim')} is not "
                                    f"OpenCLIP-G's hidden size {clip_g['hidden_size']}")


def _unet_levels(sd: StateDict, p: str) -> list[dict[str, Any]]:
    """Group input blocks 1.. into resolution levels: resnet(+attention) blocks, then a downsampler."""
    n = _count(sd, p + "input_blocks.{}.")
    levels: list[dict[str, Any]] = [{"blocks": [], "attn": False, "channels": 0}]
    for i in range(1, n):
        if p + f"input_blocks.{i}.0.op.weight" in sd:
            levels.append({"blocks": [], "attn": False, "channels": 0})
            continue
        level = levels[-1]
        level["blocks"].append(i)
        level["channels"] = int(sd[p + f"input_blocks.{i}.0.out_layers.3.weight"].shape[0])
        level["attn"] = level["attn"] or any(k.startswith(p + f"input_blocks.{i}.1.") for k in sd)
    return [lvl for lvl in levels if lvl["blocks"]]


def _transformer_depth(sd: StateDict, block_prefix: str) -> int:
    return _count(sd, block_prefix + "transformer_blocks.{}.")


def _heads(block_out: list[int], rule: dict[str, int]) -> int | list[int]:
    if "heads" in rule:
        return rule["heads"]
    heads = [max(1, ch // rule["head_channels"]) for ch in block_out]
    return heads if len(set(heads)) > 1 else heads[0]


# ---- VAE ----------------------------------------------------------------------------------------------------


def infer_vae_config(sd: StateDict, prefix: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """An AutoencoderKL config from LDM-layout VAE weights (`encoder.down.N.block.M...`)."""
    p = prefix
    levels = _count(sd, p + "encoder.down.{}.")
    block_out = [int(sd[p + f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in range(levels)]
    cfg = copy.deepcopy(defaults)
    cfg.update(
        in_channels=int(sd[p + "encoder.conv_in.weight"].shape[1]),
        out_channels=int(sd[p + "decoder.conv_out.weight"].shape[0]),
        latent_channels=int(sd[p + "post_quant_conv.weight"].shape[0]),
        block_out_channels=block_out,
        down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels,
        layers_per_block=_count(sd, p + "encoder.down.0.block.{}."),
    )
    if not any(k.startswith(p + "encoder.mid.attn_1.") for k in sd):
        cfg["mid_block_add_attention"] = False
    return cfg


# ---- text encoders ----------------------------------------------------------------------------------------


def _text_encoder_configs(sd: StateDict, family: str, defaults: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if family == "sd1":
        return [hf_clip_config(sd, SD1_CLIP, defaults[0])]
    if family == "sd2":  # like diffusers, SD 2.x's text encoder drops OpenCLIP's last layer (never used)
        cfg = open_clip_config(sd, SD2_CLIP, defaults[0])
        cfg["num_hidden_layers"] -= 1
        return [cfg]
    if family == "sdxl_refiner":
        return [open_clip_config(sd, SDXL_REFINER_CLIP_G, defaults[0])]
    return [hf_clip_config(sd, SDXL_CLIP_L, defaults[0]), open_clip_config(sd, SDXL_CLIP_G, defaults[1])]


def hf_clip_config(sd: StateDict, prefix: str, defaults: dict[str, Any]) -> dict[str, Any]:
    inner = prefix + ("text_model." if any(k.startswith(prefix + "text_model.") for k in sd) else "")
    tok = sd[inner + "embeddings.token_embedding.weight"]
    return _clip_config(defaults, vocab=tok.shape[0], hidden=tok.shape[1],
                        positions=sd[inner + "embeddings.position_embedding.weight"].shape[0],
                        layers=_count(sd, inner + "encoder.layers.{}."),
                        intermediate=sd[inner + "encoder.layers.0.mlp.fc1.weight"].shape[0],
                        projection=None)


def open_clip_config(sd: StateDict, prefix: str, defaults: dict[str, Any]) -> dict[str, Any]:
    tok = sd[prefix + "token_embedding.weight"]
    proj = sd.get(prefix + "text_projection")
    return _clip_config(defaults, vocab=tok.shape[0], hidden=tok.shape[1],
                        positions=sd[prefix + "positional_embedding"].shape[0],
                        layers=_count(sd, prefix + "transformer.resblocks.{}."),
                        intermediate=sd[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
                        projection=None if proj is None else proj.shape[1])


def _clip_config(defaults: dict[str, Any], *, vocab: int, hidden: int, positions: int, layers: int,
                 intermediate: int, projection: int | None) -> dict[str, Any]:
    cfg = dict(defaults)
    cfg.update(vocab_size=int(vocab), hidden_size=int(hidden), max_position_embeddings=int(positions),
               num_hidden_layers=int(layers), intermediate_size=int(intermediate),
               num_attention_heads=max(1, int(hidden) // 64))
    cfg["projection_dim"] = int(projection) if projection is not None else int(hidden)
    return cfg
