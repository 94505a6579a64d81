"""A ControlNet loaded with the MODEL it is used with (ComfyUI's DiffControlNetLoader).

A "difference" ControlNet (an original-layout file with a `difference` key) stores, for each of its weights that
copies the UNet's (`control_model.X` beside the UNet's `diffusion_model.X`), what it adds to the base model's
weight; its hint block and zero convolutions are whole. It is completed with the given MODEL's UNet weights as
that model computes with them (its LoRA patches applied), as ComfyUI does. Any other ControlNet file loads exactly
as ControlNetLoader loads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdgraph.nodes.sd.checkpoint_layout import UNET_PREFIX, StateDict
from sdgraph.nodes.sd.ldm_names import unet_to_ldm
from sdgraph.nodes.sd.loading import load_controlnet, read_state_dict
from sdgraph.nodes.sd.model_objects import ControlNetModel, DiffusionModel
from sdgraph.nodes.sd.weight_file import open_weights

CONTROL_PREFIX = "control_model."
MARKER = "difference"


def is_difference_controlnet(path: Path) -> bool:
    return not path.is_dir() and MARKER in open_weights(path)


def load_controlnet_for(path: Path, model: DiffusionModel, manager: Any) -> ControlNetModel:
    """The ControlNet of `path`; a difference file completed with `model`'s weights (cached per model and patches)."""
    if not is_difference_controlnet(path):
        return load_controlnet(path, manager)
    options = (model.slot.name, tuple(p.key for p in model.patches))
    return manager.load(path, "controlnet_difference", lambda p: _load_difference(p, model, manager), options)


def _load_difference(path: Path, model: DiffusionModel, manager: Any) -> ControlNetModel:
    from sdgraph.nodes.sd.controlnet_layout import build_controlnet, read_controlnet

    sd = read_state_dict(path)
    del sd[MARKER]
    completed = add_base_weights(sd, base_weights(model))
    config, weights = read_controlnet(completed, path.name)
    module = build_controlnet(config, weights, path.name)
    return ControlNetModel(slot=manager.manage(module, f"{path.name}:controlnet+{model.name}", "controlnet"),
                           name=path.name)


def base_weights(model: DiffusionModel) -> StateDict:
    """The MODEL's UNet weights under their LDM names (without a prefix), as it computes with them."""
    unet = model.unet()
    return {k.removeprefix(UNET_PREFIX): v.detach().to("cpu", torch.float32)
            for k, v in unet_to_ldm(unet.state_dict(), dict(unet.config)).items()}


def add_base_weights(sd: StateDict, base: StateDict) -> StateDict:
    """`sd` with each `control_model.X` that the base has as `X` raised by the base's weight, added in the file's
    dtype as ComfyUI adds it."""
    out = dict(sd)
    for key, value in sd.items():
        name = key[len(CONTROL_PREFIX):] if key.startswith(CONTROL_PREFIX) else None
        if name is not None and name in base and base[name].shape == value.shape:
            out[key] = value + base[name].to(value.dtype)
    return out
