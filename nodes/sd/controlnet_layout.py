"""Read a single-file ControlNet: which key layout it uses, its diffusers `ControlNetModel` config, its weights.

Layouts (weights carry no architecture flag, so the config comes from names and shapes):

- original (lllyasviel's ControlNet, `.pth` or `.safetensors`): `control_model.` + `time_embed`, `input_blocks`,
  `middle_block`, `zero_convs`, `input_hint_block`, `middle_block_out` (+ `label_emb` for SDXL); some files have
  the same keys without the prefix, and ControlNet 1.0 files also carry a whole SD checkpoint beside them (only
  the `control_model.` part is read). Converted with diffusers' `convert_controlnet_checkpoint`, offline.
- diffusers (`controlnet_cond_embedding.*`, `down_blocks.*`, `controlnet_down_blocks.*`): used as they are.

What shapes cannot tell follows the SD families: an SD 1.x ControlNet (convolution `proj_in`) has 8 attention
heads per block; SD 2.x and SDXL ones (linear `proj_in`, or an SDXL add-embedding) one head per 64 channels.
The width of SDXL's sinusoidal time-id embedding has no weights either; 256 (SDXL's) is assumed here and
`control.py` matches it to the base model's inputs when sampling.
"""
from __future__ import annotations

import re
from typing import Any

import torch

from sdgraph.nodes.sd.checkpoint_layout import StateDict, UnsupportedCheckpoint

LDM_PREFIX = "control_model."
LDM_MARKERS = ("input_hint_block.0.weight", "zero_convs.0.0.weight")
DIFFUSERS_MARKER = "controlnet_cond_embedding.conv_in.weight"
SD1_HEADS = 8
HEAD_CHANNELS = 64
SDXL_TIME_ID_DIM = 256
EXPECTED = ("expected a ControlNet: original-layout keys (control_model.input_hint_block.*, "
            "control_model.zero_convs.*, with or without the control_model. prefix) or diffusers-layout keys "
            "(controlnet_cond_embedding.*, down_blocks.*, controlnet_down_blocks.*), or a T2I-Adapter (conv_in.* + "
            "body.N.*, or adapter.*)")


def detect_layout(sd: StateDict, name: str) -> str:
    """"ldm" or "diffusers"; anything else is an `UnsupportedCheckpoint` that says what the file looks like."""
    if "difference" in sd:  # the base model's weights complete these (nodes/sd/diff_controlnet.py)
        raise UnsupportedCheckpoint(f"{name}: a difference ControlNet (weights relative to a base model): load it "
                                    "with DiffControlNetLoader, which adds its MODEL's weights")
    if DIFFUSERS_MARKER in sd:
        return "diffusers"
    if all(LDM_PREFIX + k in sd for k in LDM_MARKERS) or all(k in sd for k in LDM_MARKERS):
        return "ldm"
    raise UnsupportedCheckpoint(f"{name}: {_what_it_is(sd)}; {EXPECTED}")


def _what_it_is(sd: StateDict) -> str:
    keys = list(sd)
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "a Stable Diffusion checkpoint or UNet (model.diffusion_model.*), not a ControlNet"
    if "conv_in.weight" in sd and any(k.startswith("up_blocks.") for k in keys):
        return "a diffusers UNet (it has up_blocks.*), not a ControlNet"
    if "lora_controlnet" in sd:
        return "a Control-LoRA, which is not supported"
    if any(k.startswith(LDM_PREFIX) for k in keys) or any(k.startswith("controlnet_") for k in keys):
        return "an incomplete ControlNet (its hint block or first zero convolution is missing)"
    sample = ", ".join(keys[:3]) or "no tensors"
    return f"no ControlNet keys (first keys: {sample})"


def read_controlnet(sd: StateDict, name: str) -> tuple[dict[str, Any], StateDict]:
    """The diffusers config and the weights under diffusers names of a single-file ControlNet."""
    weights = sd if detect_layout(sd, name) == "diffusers" else ldm_to_diffusers(sd, name)
    config = infer_config(weights, name)
    if re.search(r"_shuffle(_fp16)?$", name.rsplit(".", 1)[0]):  # ControlNet 1.1 shuffle pools its residuals
        config["global_pool_conditions"] = True
    return config, weights


# ---- original layout -> diffusers names ---------------------------------------------------------------------


def ldm_to_diffusers(sd: StateDict, name: str) -> StateDict:
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING, convert_controlnet_checkpoint

    if any(k.startswith(LDM_PREFIX) for k in sd):
        sd = {k[len(LDM_PREFIX):]: v for k, v in sd.items() if k.startswith(LDM_PREFIX)}
    _require(sd, name, "time_embed.0.weight", "input_blocks.0.0.weight", "middle_block_out.0.weight")
    out = convert_controlnet_checkpoint(sd, {"layers_per_block": _ldm_layers_per_block(sd)})
    for new, old in DIFFUSERS_TO_LDM_MAPPING["controlnet"]["addition_embed_type"].items():
        if old in sd:  # SDXL's label_emb, which diffusers' converter leaves out
            out[new] = sd[old]
    return {k: v for k, v in out.items() if v is not None}


def _ldm_layers_per_block(sd: StateDict) -> int:
    """Input blocks 1..n hold the first level's resnets; block n + 1 is its downsampler (if there is one)."""
    blocks = _count(sd, "input_blocks.{}.")
    return next((i - 1 for i in range(1, blocks) if f"input_blocks.{i}.0.op.weight" in sd), blocks - 1)


# ---- the config from diffusers names ------------------------------------------------------------------------


def infer_config(sd: StateDict, name: str) -> dict[str, Any]:
    """A `ControlNetModel` config from diffusers-layout ControlNet weights."""
    _require(sd, name, "conv_in.weight", "time_embedding.linear_1.weight", DIFFUSERS_MARKER,
             "controlnet_cond_embedding.conv_out.weight", "controlnet_mid_block.weight",
             "down_blocks.0.resnets.0.conv2.weight")
    levels = _count(sd, "down_blocks.{}.")
    _require(sd, name, *(f"down_blocks.{i}.resnets.0.conv2.weight" for i in range(levels)))
    block_out = [int(sd[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0]) for i in range(levels)]
    attn = [any(k.startswith(f"down_blocks.{i}.attentions.") for k in sd) for i in range(levels)]
    depth = [_count(sd, f"down_blocks.{i}.attentions.0.transformer_blocks.{{}}.") if a else 1
             for i, a in enumerate(attn)]
    proj_in = next((v for k, v in sd.items() if k.endswith(".proj_in.weight")), None)
    linear = proj_in is not None and proj_in.dim() == 2
    sdxl = "add_embedding.linear_1.weight" in sd
    cfg: dict[str, Any] = {
        "in_channels": int(sd["conv_in.weight"].shape[1]),
        "conditioning_channels": int(sd[DIFFUSERS_MARKER].shape[1]),
        "conditioning_embedding_out_channels": _hint_channels(sd),
        "block_out_channels": block_out,
        "layers_per_block": _count(sd, "down_blocks.0.resnets.{}."),
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "transformer_layers_per_block": depth if len(set(depth)) > 1 else depth[0],
        "attention_head_dim": _heads(block_out, per_64=linear or sdxl),
        "use_linear_projection": linear,
    }
    to_k = next((v for k, v in sd.items() if k.endswith("attn2.to_k.weight")), None)
    if to_k is not None:
        cfg["cross_attention_dim"] = int(to_k.shape[1])
    cfg.update(_mid_block(sd, name, depth[-1]))
    if sdxl:
        cfg.update(addition_embed_type="text_time", addition_time_embed_dim=SDXL_TIME_ID_DIM,
                   projection_class_embeddings_input_dim=int(sd["add_embedding.linear_1.weight"].shape[1]))
    time_dim = int(sd["time_embedding.linear_1.weight"].shape[0])
    if time_dim != 4 * block_out[0]:
        raise UnsupportedCheckpoint(f"{name}: time embedding width {time_dim} is not 4 x {block_out[0]} channels")
    return cfg


def _hint_channels(sd: StateDict) -> list[int]:
    """conv_in's width, then the width after each strided pair of hint convolutions."""
    pairs = _count(sd, "controlnet_cond_embedding.blocks.{}.") // 2
    widths = [sd["controlnet_cond_embedding.conv_in.weight"].shape[0]]
    widths += [sd[f"controlnet_cond_embedding.blocks.{2 * i + 1}.weight"].shape[0] for i in range(pairs)]
    return [int(w) for w in widths]


def _mid_block(sd: StateDict, name: str, last_depth: int) -> dict[str, Any]:
    if not any(k.startswith("mid_block.attentions.") for k in sd):
        return {"mid_block_type": "UNetMidBlock2D"}
    mid_depth = _count(sd, "mid_block.attentions.0.transformer_blocks.{}.")
    if mid_depth != last_depth:  # diffusers' ControlNetModel gives its mid block the last level's depth
        raise UnsupportedCheckpoint(f"{name}: mid-block transformer depth {mid_depth} differs from the last "
                                    f"level's ({last_depth})")
    return {}


def _heads(block_out: list[int], per_64: bool) -> int | list[int]:
    if not per_64:
        return SD1_HEADS
    heads = [max(1, ch // HEAD_CHANNELS) for ch in block_out]
    return heads if len(set(heads)) > 1 else heads[0]


def _count(sd: StateDict, pattern: str) -> int:
    """How many distinct integers fill `{}` in keys starting with the pattern."""
    regex = re.compile(re.escape(pattern).replace(r"\{\}", r"(\d+)"))
    return len({m.group(1) for k in sd if (m := regex.match(k))})


def _require(sd: StateDict, name: str, *keys: str) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise UnsupportedCheckpoint(f"{name}: an incomplete ControlNet, missing {', '.join(missing[:3])}")


# ---- building the module ------------------------------------------------------------------------------------


def build_controlnet(config: dict[str, Any], weights: StateDict, name: str) -> torch.nn.Module:
    """A diffusers ControlNetModel holding exactly `weights`: built without initialising (on the meta device),
    so a 1.2 B-parameter SDXL ControlNet costs no random initialisation and no second copy."""
    from diffusers.models.controlnets.controlnet import ControlNetModel

    with torch.device("meta"):
        module = ControlNetModel.from_config(config)  # drops a config.json's `_class_name` and such
    try:
        module.load_state_dict(weights, strict=False, assign=True)
    except RuntimeError as err:  # a shape that does not fit the inferred config
        raise UnsupportedCheckpoint(f"{name}: weights do not fit the ControlNet they describe: {err}") from err
    missing = [k for k, v in [*module.named_parameters(), *module.named_buffers()] if v.is_meta]
    if missing:
        raise UnsupportedCheckpoint(f"{name}: an incomplete ControlNet, {len(missing)} weights missing, "
                                    f"e.g. {', '.join(missing[:3])}")
    return module
