"""diffusers names -> original (LDM / SGM / OpenCLIP) names, for the UNet, the VAE, the text encoders and ControlNets.

Loading goes the other way with diffusers' own converters; this direction serves two things: LoRA files whose
keys use the original UNet names (kohya's SDXL LoRAs: `lora_unet_input_blocks_4_1_...`), and writing a model in
the original single-file layout (the tests save their tiny random models this way).
"""
from __future__ import annotations

import re
from typing import Any

import torch

_RESNET_UNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
               "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
               "class_embedding.linear_1": "label_emb.0.0", "class_embedding.linear_2": "label_emb.0.2",  # unCLIP
               "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
               "mid_block.resnets.1": "middle_block.2"}


def _rename_resnet(rest: str, table: tuple[tuple[str, str], ...]) -> str:
    head, _, tail = rest.partition(".")
    for new, old in table:
        if head == new:
            return f"{old}.{tail}" if tail else old
    return rest


def unet_name_to_ldm(name: str, config: dict[str, Any]) -> str | None:
    """The LDM name of a diffusers UNet module or parameter name (None when it has none)."""
    n = config["layers_per_block"] + 1
    up_attn = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    for new, old in _UNET_FIXED.items():
        if name == new or name.startswith(new + "."):
            rest = name[len(new) + 1:]
            if new.startswith("mid_block.resnets"):
                rest = _rename_resnet(rest, _RESNET_UNET)
            return old + ("." + rest if rest else "")
    m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)(?:\.(.*))?$", name)
    if m is None:
        return None
    side, block, kind, index, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5) or ""
    if kind == "downsamplers":
        return f"input_blocks.{(block + 1) * n}.0.op" + rest.removeprefix("conv")
    if kind == "upsamplers":
        return f"output_blocks.{block * n + n - 1}.{2 if up_attn[block] else 1}." + rest
    slot = 0 if kind == "resnets" else 1
    if kind == "resnets":
        rest = _rename_resnet(rest, _RESNET_UNET)
    number = 1 + block * n + index if side == "down" else block * n + index
    prefix = f"{'input' if side == 'down' else 'output'}_blocks.{number}.{slot}"
    return prefix + ("." + rest if rest else "")


def unet_to_ldm(state: dict[str, torch.Tensor], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        name = unet_name_to_ldm(key, config)
        if name is None:
            raise KeyError(f"no LDM name for UNet weight {key}")
        out["model.diffusion_model." + name] = value
    return out


_VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def vae_name_to_ldm(name: str, levels: int) -> str:
    name = name.replace("conv_norm_out", "norm_out")
    m = re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)$", name)
    if m:
        part, side, block, kind, index, rest = m.groups()
        level = int(block) if side == "down" else levels - 1 - int(block)
        if kind == "resnets":
            return f"{part}.{side}.{level}.block.{index}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        return f"{part}.{side}.{level}.{'downsample' if side == 'down' else 'upsample'}.{rest}"
    m = re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.*)$", name)
    if m:
        part, kind, index, rest = m.groups()
        if kind == "resnets":
            return f"{part}.mid.block_{int(index) + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        for new, old in _VAE_ATTN:
            if rest.startswith(new + "."):
                rest = old + rest[len(new):]
        return f"{part}.mid.attn_1.{rest}"
    return name


def vae_to_ldm(state: dict[str, torch.Tensor], levels: int, prefix: str = "first_stage_model.") -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        name = vae_name_to_ldm(key, levels)
        if ".mid.attn_1." in name and value.dim() == 2:
            value = value[:, :, None, None]  # LDM stores the attention projections as 1x1 convolutions
        out[prefix + name] = value
    return out


def clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A Hugging Face CLIPTextModel's weights under an LDM prefix (`cond_stage_model.transformer.`)."""
    return {prefix + ("" if k.startswith("text_model.") else "text_model.") + k: v for k, v in state.items()}


def open_clip_to_ldm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A CLIPTextModel[WithProjection]'s weights in the open_clip layout (fused q/k/v) under `prefix`."""
    sd = {k.removeprefix("text_model."): v for k, v in state.items()}
    out = {prefix + "token_embedding.weight": sd["embeddings.token_embedding.weight"],
           prefix + "positional_embedding": sd["embeddings.position_embedding.weight"],
           prefix + "ln_final.weight": sd["final_layer_norm.weight"],
           prefix + "ln_final.bias": sd["final_layer_norm.bias"]}
    if "text_projection.weight" in sd:
        out[prefix + "text_projection"] = sd["text_projection.weight"].T.contiguous()
    layers = {int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")}
    for i in sorted(layers):
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [sd[src + f"self_attn.{p}_proj.{kind}"] for p in ("q", "k", "v")])
            out[dst + f"attn.out_proj.{kind}"] = sd[src + f"self_attn.out_proj.{kind}"]
            out[dst + f"ln_1.{kind}"] = sd[src + f"layer_norm1.{kind}"]
            out[dst + f"ln_2.{kind}"] = sd[src + f"layer_norm2.{kind}"]
            out[dst + f"mlp.c_fc.{kind}"] = sd[src + f"mlp.fc1.{kind}"]
            out[dst + f"mlp.c_proj.{kind}"] = sd[src + f"mlp.fc2.{kind}"]
    return out


def controlnet_name_to_ldm(name: str, layers_per_block: int, hint_convs: int) -> str | None:
    """The original (lllyasviel) name of a diffusers ControlNetModel weight, without the `control_model.` prefix.

    `hint_convs` counts the `controlnet_cond_embedding.blocks.*` convolutions (6 in every released file, which
    puts the last one at `input_hint_block.14`); the rest is named as in the UNet's input and middle blocks.
    """
    m = re.match(r"controlnet_down_blocks\.(\d+)\.(.*)$", name)
    if m:
        return f"zero_convs.{m.group(1)}.0.{m.group(2)}"
    if name.startswith("controlnet_mid_block."):
        return "middle_block_out.0." + name.removeprefix("controlnet_mid_block.")
    m = re.match(r"controlnet_cond_embedding\.(conv_in|conv_out|blocks\.(\d+))\.(.*)$", name)
    if m:
        part = m.group(1)
        index = 0 if part == "conv_in" else 2 * hint_convs + 2 if part == "conv_out" else 2 * int(m.group(2)) + 2
        return f"input_hint_block.{index}.{m.group(3)}"
    return unet_name_to_ldm(name, {"layers_per_block": layers_per_block, "up_block_types": []})


def controlnet_to_ldm(state: dict[str, torch.Tensor], layers_per_block: int,
                      prefix: str = "control_model.") -> dict[str, torch.Tensor]:
    hint_convs = len({k.split(".")[2] for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
    out = {}
    for key, value in state.items():
        name = controlnet_name_to_ldm(key, layers_per_block, hint_convs)
        if name is None:
            raise KeyError(f"no LDM name for ControlNet weight {key}")
        out[prefix + name] = value
    return out


def t2i_adapter_to_original(state: dict[str, torch.Tensor], resnets_per_level: int) -> dict[str, torch.Tensor]:
    """A diffusers T2IAdapter's weights under TencentARC's names: the full adapter numbers its resnets through
    all levels (`body.{level * per_level + index}`), the light one nests them (`body.{level}.body.{index}`)."""
    light = "adapter.conv_in.weight" not in state
    out = {}
    for key, value in state.items():
        name = key.removeprefix("adapter.")
        m = re.match(r"body\.(\d+)\.(in_conv|resnets\.(\d+))\.(.*)$", name)
        if m and light:
            name = re.sub(r"^body\.(\d+)\.resnets\.", r"body.\1.body.", name)
        elif m:
            level, index = int(m.group(1)), int(m.group(3) or 0)
            part = "in_conv." if m.group(2) == "in_conv" else ""
            name = f"body.{level * resnets_per_level + index}.{part}{m.group(4)}"
        out[name] = value
    return out
