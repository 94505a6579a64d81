"""`comfy.model_base` for plugins: ModelType and the model classes packs test MODELs against.

sdgraph's MODEL is also ComfyUI's inner model (`model.model` is the MODEL itself), so these classes answer
isinstance for it by what it is: every MODEL is a `BaseModel`; an SDXL base MODEL an `SDXL`, the refiner an
`SDXLRefiner`, an 8-channel SDXL UNet an `SDXL_instructpix2pix` (and 8-channel SD 1.x one `SD15_instructpix2pix`).
The classes of families sdgraph does not run exist for those checks (they never match) and cannot be built.
"""
from __future__ import annotations

import enum
from typing import Any, Callable

from sdgraph.comfy_layer import unsupported
from sdgraph.nodes.sd.model_objects import DiffusionModel


class ModelType(enum.Enum):
    EPS = 1
    V_PREDICTION = 2
    V_PREDICTION_EDM = 3
    STABLE_CASCADE = 4
    EDM = 5
    FLOW = 6
    V_PREDICTION_CONTINUOUS = 7
    FLUX = 8
    IMG_TO_IMG = 9
    FLOW_COSMOS = 10


def model_type_of(model: DiffusionModel) -> ModelType:
    return ModelType.V_PREDICTION if model.prediction_type == "v_prediction" else ModelType.EPS


def _in_channels(model: DiffusionModel) -> int:
    return int(model.slot.module.config.in_channels)


_RULES: dict[str, Callable[[DiffusionModel], bool]] = {
    "BaseModel": lambda m: True,
    "SDXL": lambda m: m.is_sdxl and not m.is_sdxl_refiner,
    "SDXLRefiner": lambda m: m.is_sdxl_refiner,
    "IP2P": lambda m: _in_channels(m) == 2 * m.latent_channels,
    "SDXL_instructpix2pix": lambda m: m.is_sdxl and _in_channels(m) == 2 * m.latent_channels,
    "SD15_instructpix2pix": lambda m: not m.is_sdxl and _in_channels(m) == 2 * m.latent_channels,
}


class _ModelClass(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        rule = _RULES.get(cls.__name__)
        return isinstance(obj, DiffusionModel) and rule is not None and rule(obj)


def _family(name: str, base: tuple[type, ...] = ()) -> type:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(unsupported.message(f"{__name__}.{name}()", "building ComfyUI's inner model "
                                                      "objects (MODEL values come from sdgraph's loaders)"))

    return _ModelClass(name, base, {"__init__": __init__, "__module__": __name__})


BaseModel = _family("BaseModel")
SDXL = _family("SDXL", (BaseModel,))
SDXLRefiner = _family("SDXLRefiner", (BaseModel,))
IP2P = _family("IP2P")
SDXL_instructpix2pix = _family("SDXL_instructpix2pix", (IP2P, SDXL))
SD15_instructpix2pix = _family("SD15_instructpix2pix", (IP2P, BaseModel))

_OTHER_FAMILIES = ("SD21UNCLIP", "SVD_img2vid", "SV3D_u", "SV3D_p", "Stable_Zero123", "SD_X4Upscaler", "Lotus",
                   "StableCascade_C", "StableCascade_B", "SD3", "AuraFlow", "StableAudio1", "HunyuanDiT", "PixArt",
                   "Flux", "GenmoMochi", "LTXV", "HunyuanVideo", "HunyuanVideoI2V", "HunyuanVideoSkyreelsI2V",
                   "CosmosVideo", "CosmosPredict2", "Lumina2", "WAN21", "WAN21_Vace", "WAN21_Camera", "WAN21_HuMo",
                   "WAN22_Animate", "WAN22_S2V", "WAN22", "Hunyuan3Dv2", "Hunyuan3Dv2_1", "HiDream", "Chroma",
                   "ChromaRadiance", "ACEStep", "Omnigen2", "QwenImage", "HunyuanImage21", "HunyuanImage21Refiner")
for _name in _OTHER_FAMILIES:
    globals()[_name] = _family(_name, (BaseModel,))
