"""`comfy_extras.chainner_models.model_loading` for plugins: an upscale model from its state dict.

`load_state_dict(sd)` gives sdgraph's UPSCALE_MODEL value (the architectures sdgraph's UpscaleModelLoader reads:
ESRGAN / Real-ESRGAN RRDB nets and their compact variant), managed by the model manager of the node call in
progress; `.eval()` returns it, as packs call it on the module ComfyUI gave.
"""
from __future__ import annotations

from dataclasses import dataclass
import torch

from sdgraph.comfy_layer import binding
from sdgraph.nodes.sd.upscale_arch import UnsupportedUpscaleModel, build, canonical
from sdgraph.nodes.sd.upscale_model import UpscaleModel


@dataclass
class LoadedUpscaleModel(UpscaleModel):
    def eval(self) -> "LoadedUpscaleModel":
        return self


def load_state_dict(state_dict: dict[str, torch.Tensor]) -> LoadedUpscaleModel:
    try:
        built = build(canonical(dict(state_dict)))
    except UnsupportedUpscaleModel as exc:
        raise ValueError(f"comfy_extras.chainner_models.model_loading.load_state_dict: {exc}") from None
    slot = binding.model_manager().manage(built.module, "state dict:upscale_model", "upscale_model")
    return LoadedUpscaleModel(slot, built.architecture, built.scale, built.input_channels, built.output_channels,
                              built.minimum, built.size_multiple, name="state dict")

