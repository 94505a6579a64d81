"""sdgraph's denoiser against ComfyUI's sampler-side conditioning code on the toy scenarios of `cond_toy`:
areas in pixels and percent with their edge fade and twins, masks with strength and bounds, start/end percent
windows (at the boundary sigma too), uncovered pixels, and the concat channels of inpainting and InstructPix2Pix
models. The references come from ComfyUI itself (`tools/comfy_reference/conditioning_reference.py`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cond_toy import scenarios, start, toy_eps
from sampling_support import TinyModel
from sdgraph.nodes.sd.denoiser import SDDenoiser

DATA = Path(__file__).parent / "data" / "conditioning_reference.npz"
CASES = scenarios()


class ToyUNet(torch.nn.Module):
    """cond_toy's epsilon function behind the diffusers UNet call sdgraph makes."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.config = type("Config", (), {"in_channels": in_channels})()
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # TinyModel.dtype reads it

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                return_dict: bool = True, **kwargs: Any) -> tuple[torch.Tensor]:
        return (toy_eps(sample, timestep, encoder_hidden_states),)


CHANNELS = {None: 4, "inpaint": 9, "ip2p": 8}


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(DATA) as data:
        return dict(data)


@pytest.mark.parametrize("name", list(CASES))
def test_denoised_matches_comfyui(name: str, reference: dict[str, np.ndarray]) -> None:
    case = CASES[name]
    model = TinyModel(ToyUNet(CHANNELS[case["kind"]]))
    samples = case["samples"]
    with torch.inference_mode():
        denoiser = SDDenoiser(model, case["positive"], case["negative"], case["cfg"], samples)
        if case["noise_mask"] is not None:
            denoiser.set_noise_mask(case["noise_mask"])
        for i, sigma in enumerate(case["sigmas"]):
            ours = denoiser(start(name, tuple(samples.shape), sigma, i), sigma)
            theirs = torch.from_numpy(reference[f"{name}/{i}"])
            torch.testing.assert_close(ours, theirs, rtol=2e-6, atol=2e-5, msg=lambda m: f"{name} sigma {sigma}: {m}")
