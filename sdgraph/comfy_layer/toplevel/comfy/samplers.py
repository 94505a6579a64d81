"""`comfy.samplers` for plugins: sdgraph's sampler and scheduler names (ComfyUI's, in its order), sigmas, guiders.

`KSampler` carries the SAMPLERS and SCHEDULERS lists packs build their inputs from. Instantiating it (ComfyUI's
low-level sampler object over a ModelPatcher) is not provided; `nodes.common_ksampler` samples a LATENT.
`CFGGuider` is an sdgraph GUIDER with ComfyUI's construction (see sdgraph/comfy_layer/guiders.py);
`sampler_object(name)` is the SAMPLER value KSamplerSelect gives. ComfyUI's internals (`KSAMPLER` over a
k-diffusion function, `sampling_function`, `calc_cond_batch`) are stand-ins that raise when used.
"""
from __future__ import annotations

from typing import Any

import torch

from sdgraph.comfy_layer import unsupported
from sdgraph.comfy_layer.guiders import CFGGuider  # noqa: F401 - ComfyUI's name
from sdgraph.nodes.sd.custom_sampling import SamplerChoice
from sdgraph.nodes.sd.k_samplers import SAMPLER_NAMES as _SAMPLERS
from sdgraph.nodes.sd.schedules import SCHEDULER_NAMES as _SCHEDULERS
from sdgraph.nodes.sd.schedules import compute_sigmas

SAMPLER_NAMES: list[str] = list(_SAMPLERS)
KSAMPLER_NAMES: list[str] = [n for n in SAMPLER_NAMES if n not in ("ddim", "uni_pc", "uni_pc_bh2")]
SCHEDULER_NAMES: list[str] = list(_SCHEDULERS)
SCHEDULER_HANDLERS: dict[str, Any] = {name: name for name in SCHEDULER_NAMES}


def calculate_sigmas(model_sampling: Any, scheduler_name: str, steps: int) -> torch.Tensor:
    """The sigmas of a schedule for `steps` steps, ending in 0."""
    if scheduler_name not in SCHEDULER_NAMES:
        raise ValueError(f"calculate_sigmas: invalid scheduler {scheduler_name!r}")
    return compute_sigmas(model_sampling, scheduler_name, steps)


class KSampler:
    SCHEDULERS = SCHEDULER_NAMES
    SAMPLERS = SAMPLER_NAMES
    DISCARD_PENULTIMATE_SIGMA_SAMPLERS = {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "comfy.samplers.KSampler objects are not provided by sdgraph's ComfyUI layer yet; "
            "sample with nodes.common_ksampler(model, seed, steps, cfg, sampler_name, scheduler, positive, "
            "negative, latent, denoise=...) instead")


def sampler_object(name: str) -> SamplerChoice:
    """The SAMPLER of that name (KSamplerSelect's output)."""
    if name not in SAMPLER_NAMES:
        raise ValueError(f"comfy.samplers.sampler_object: unknown sampler {name!r}")
    return SamplerChoice(name)


unsupported.define(globals(), "ComfyUI's sampler internals (sdgraph samples with its own denoiser)",
                   ("KSAMPLER", "Sampler", "sampling_function", "calc_cond_batch", "cfg_function", "sample",
                    "ksampler", "process_conds", "CFGNoisePredictor", "KSamplerX0Inpaint"))
