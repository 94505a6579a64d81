"""`comfy.latent_formats` for plugins: the latent spaces of the model families sdgraph runs, as sdgraph's own.

`SD15` and `SDXL` are sdgraph's `LatentFormat` (process_in scales VAE latents into the model's space, process_out
back) with ComfyUI's defaults, and a MODEL's format answers isinstance by its scale: an SD 1.x / 2.x MODEL's
`get_model_object("latent_format")` is an `SD15`, an SDXL one's an `SDXL`. The other families' classes exist for
isinstance checks (nothing sdgraph loads is one) and refuse to be built.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdgraph.comfy_layer import unsupported
from sdgraph.nodes.sd.model_objects import LatentFormat as _SdgraphFormat


class _FormatClass(type):
    """A plain sdgraph LatentFormat counts as the ComfyUI class whose scale and shift it has."""

    def __instancecheck__(cls, obj: Any) -> bool:
        if type.__instancecheck__(cls, obj):
            return True
        match = getattr(cls, "MATCHES", None)
        return match is not None and type(obj) is _SdgraphFormat and \
            (obj.scale_factor, obj.shift_factor) == match


@dataclass(frozen=True)
class LatentFormat(_SdgraphFormat, metaclass=_FormatClass):
    scale_factor: float = 1.0
    latent_channels = 4
    latent_dimensions = 2
    latent_rgb_factors: Any = None
    latent_rgb_factors_bias: Any = None
    taesd_decoder_name: Any = None
    MATCHES = None


@dataclass(frozen=True)
class SD15(LatentFormat):
    scale_factor: float = 0.18215
    MATCHES = (0.18215, 0.0)


@dataclass(frozen=True)
class SDXL(LatentFormat):
    scale_factor: float = 0.13025
    MATCHES = (0.13025, 0.0)


_OTHER_FAMILIES = ("SDXL_Playground_2_5", "SD_X4", "SC_Prior", "SC_B", "SD3", "StableAudio1", "Flux", "Mochi",
                   "LTXV", "HunyuanVideo", "Cosmos1CV8x8x8", "Wan21", "Wan22", "HunyuanImage21",
                   "HunyuanImage21Refiner", "Hunyuan3Dv2", "Hunyuan3Dv2_1", "Hunyuan3Dv2mini", "ACEAudio",
                   "ChromaRadiance")
for _name in _OTHER_FAMILIES:
    globals()[_name] = unsupported.cls(f"{__name__}.{_name}", f"the {_name} latent format (a model family "
                                                              "sdgraph does not run)", LatentFormat)
