"""T2I-Adapter files: detect them, read their config from the keys, rename their weights to diffusers' `T2IAdapter`.

Layouts:
- original (TencentARC's `t2iadapter_*.pth`): `conv_in` + `body.N.{in_conv,block1,block2}` (the full adapter;
  SDXL's when `conv_in` reads 256 or 768 channels, i.e. a 16x pixel unshuffle of 1 or 3 channels, as ComfyUI
  decides), or `body.N.{in_conv,body.M.block1,body.M.block2,out_conv}` (the light "color" adapter);
- diffusers (`adapter.conv_in`, `adapter.body.N.resnets.M.*`): used as they are.

An original full adapter has 4 levels (as every released one, and as ComfyUI assumes): its N blocks are 4 levels
of N / 4 resnets. diffusers' adapter has no skip convolutions, 3x3 inner kernels nor strided-conv downsamplers,
so files using those (`skep`, `down_opt.op`) are refused.
"""
from __future__ import annotations

import re
from typing import Any

import torch

from sdgraph.nodes.sd.checkpoint_layout import StateDict, UnsupportedCheckpoint

LEVELS = 4
XL_INPUTS = (256, 768)


def is_t2i_adapter(sd: StateDict) -> bool:
    return ("conv_in.weight" in sd and "body.0.block1.weight" in sd) or "body.0.in_conv.weight" in sd or \
        "adapter.body.0.resnets.0.block1.weight" in sd or "adapter.body.0.in_conv.weight" in sd


def read_t2i_adapter(sd: StateDict, name: str) -> tuple[dict[str, Any], StateDict]:
    """The diffusers `T2IAdapter` config and weights under diffusers names."""
    if any(k.startswith("adapter.") for k in sd):
        return _diffusers_config(sd, name), sd
    if any(".skep." in k or ".down_opt.op." in k for k in sd):
        raise UnsupportedCheckpoint(f"{name}: a T2I-Adapter with skip or strided-conv downsample convolutions "
                                    "(skep / down_opt.op weights), which diffusers' T2IAdapter cannot hold")
    weights = _light_to_diffusers(sd) if "body.0.in_conv.weight" in sd and "conv_in.weight" not in sd \
        else _full_to_diffusers(sd, name)
    return _diffusers_config(weights, name), weights


def _full_to_diffusers(sd: StateDict, name: str) -> StateDict:
    blocks = _count(sd, "body.{}.")
    if blocks % LEVELS or sd["body.0.block2.weight"].shape[-1] != 1:
        raise UnsupportedCheckpoint(f"{name}: a T2I-Adapter of {blocks} blocks with "
                                    f"{sd['body.0.block2.weight'].shape[-1]}x kernels; expected 4 levels of "
                                    "1x1-kernel resnets (TencentARC's sd14v1 / sd15v2 layout)")
    per_level = blocks // LEVELS
    out = {}
    for key, value in sd.items():
        m = re.match(r"body\.(\d+)\.(in_conv|block1|block2)\.(.*)$", key)
        if m:
            level, index = divmod(int(m.group(1)), per_level)
            part = m.group(2) if m.group(2) == "in_conv" else f"resnets.{index}.{m.group(2)}"
            out[f"adapter.body.{level}.{part}.{m.group(3)}"] = value
        else:
            out["adapter." + key] = value
    return out


def _light_to_diffusers(sd: StateDict) -> StateDict:
    return {"adapter." + re.sub(r"^body\.(\d+)\.body\.(\d+)\.", r"body.\1.resnets.\2.", k): v for k, v in sd.items()}


def _diffusers_config(sd: StateDict, name: str) -> dict[str, Any]:
    levels = _count(sd, "adapter.body.{}.")
    resnets = _count(sd, "adapter.body.0.resnets.{}.")
    if "adapter.conv_in.weight" not in sd:  # light: conv_in-less, each level narrows to a quarter in its middle
        cin = int(sd["adapter.body.0.in_conv.weight"].shape[1])
        channels = [int(sd[f"adapter.body.{i}.out_conv.weight"].shape[0]) for i in range(levels - 1)]
        return {"adapter_type": "light_adapter", "in_channels": cin // 64, "channels": channels,
                "num_res_blocks": resnets, "downscale_factor": 8}
    cin = int(sd["adapter.conv_in.weight"].shape[1])
    channels = [int(sd[f"adapter.body.{i}.resnets.0.block1.weight"].shape[0]) for i in range(levels)]
    xl = cin in XL_INPUTS
    unshuffle = 16 if xl else 8
    if cin % (unshuffle * unshuffle):
        raise UnsupportedCheckpoint(f"{name}: a T2I-Adapter whose conv_in reads {cin} channels, not a pixel "
                                    f"unshuffle of whole image channels")
    return {"adapter_type": "full_adapter_xl" if xl else "full_adapter", "in_channels": cin // unshuffle ** 2,
            "channels": channels, "num_res_blocks": resnets, "downscale_factor": unshuffle}


def build_t2i_adapter(config: dict[str, Any], weights: StateDict, name: str) -> torch.nn.Module:
    """A diffusers T2IAdapter holding exactly `weights` (strict: every weight used, none missing)."""
    from diffusers.models.adapter import T2IAdapter

    with torch.device("meta"):
        module = T2IAdapter.from_config(config)
    try:
        module.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as err:
        raise UnsupportedCheckpoint(f"{name}: weights do not fit the T2I-Adapter they describe: {err}") from err
    return module


def _count(sd: StateDict, pattern: str) -> int:
    regex = re.compile(re.escape(pattern).replace(r"\{\}", r"(\d+)"))
    return len({m.group(1) for k in sd if (m := regex.match(k))})
