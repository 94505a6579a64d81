"""`comfy_extras.nodes_custom_sampler` for plugins: sdgraph's custom-sampling nodes, and ComfyUI's NOISE and
GUIDER helper classes as sdgraph values (see sdgraph/comfy_layer/guiders.py)."""
from __future__ import annotations

from typing import Any

import torch

from sdgraph.comfy_layer.extras import reexport
from sdgraph.comfy_layer.guiders import CFGGuider as _CFGGuider
from sdgraph.comfy_layer.guiders import Guider_Basic  # noqa: F401 - ComfyUI's name
from sdgraph.nodes.sd.custom_sampling import NoiseSource
from sdgraph.nodes.sd.noise import batch_noise

reexport(globals(), (
    "BasicScheduler", "KarrasScheduler", "ExponentialScheduler", "PolyexponentialScheduler", "LaplaceScheduler",
    "SDTurboScheduler", "BetaSamplingScheduler", "VPScheduler", "SplitSigmas", "SplitSigmasDenoise", "FlipSigmas",
    "SetFirstSigma", "ExtendIntermediateSigmas", "SamplingPercentToSigma", "KSamplerSelect", "SamplerDPMPP_3M_SDE",
    "SamplerDPMPP_2M_SDE", "SamplerDPMPP_SDE", "SamplerDPMPP_2S_Ancestral", "SamplerEulerAncestral",
    "SamplerEulerAncestralCFGPP", "SamplerLMS", "SamplerDPMAdaptative", "SamplerER_SDE", "SamplerSASolver",
    "SamplerCustom", "BasicGuider", "CFGGuider", "DualCFGGuider", "DisableNoise", "RandomNoise",
    "SamplerCustomAdvanced", "AddNoise"))


class Noise_RandomNoise(NoiseSource):  # noqa: N801 - ComfyUI's name
    """The NOISE RandomNoise gives: `generate_noise(latent)` draws it as KSampler does for the seed."""

    def __init__(self, seed: int) -> None:
        super().__init__(int(seed))

    def generate_noise(self, input_latent: dict[str, Any]) -> torch.Tensor:
        samples = input_latent["samples"]
        return batch_noise(self.seed, samples.shape, input_latent.get("batch_index")).to(samples.dtype)


class Noise_EmptyNoise(NoiseSource):  # noqa: N801
    """The NOISE DisableNoise gives: zeros."""

    def __init__(self) -> None:
        super().__init__(0, enabled=False)

    def generate_noise(self, input_latent: dict[str, Any]) -> torch.Tensor:
        return torch.zeros_like(input_latent["samples"])


Guider_CFG = _CFGGuider
