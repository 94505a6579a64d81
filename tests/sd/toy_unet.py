"""A toy UNet shared by the sampler-patch reference test and tools/comfy_reference/sampler_patches.py: a fixed,
smooth, nonlinear function of the UNet's input, timestep and text context, so that both engines' sampling code
(model sampling, guidance hooks, samplers) can run on the same "model". Plain torch only (the dev script imports
this next to a ComfyUI checkout).

    out = 0.9 x_in + 0.3 tanh(a(t) x_in + m),   a(t) = 1 + 0.5 cos(t / 100)

(near what an epsilon model answers at high noise, where x_in is mostly noise, so the sampled latents stay of
moderate size under every parametrisation)
with m the first four values of each item's first context token (one per channel) plus 0.3 times the
mean of its second token.
"""
from __future__ import annotations

from typing import Any

import torch

SEED = 77
LATENT_SHAPE = (2, 4, 8, 8)
TOKENS, TEXT_DIM = 77, 32


def toy_output(x_in: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The toy UNet on a batch: x_in [N, 4, h, w], t a timestep per item ([N]) or one for all, context [N, T, D]."""
    x = x_in.float()
    t = t.float().reshape(-1, 1, 1, 1) if t.numel() > 1 else t.float().reshape(())
    ctx = context.float()
    bias = (ctx[:, 0, :4] + 0.3 * ctx[:, 1, :].mean(dim=-1, keepdim=True)).reshape(-1, 4, 1, 1)
    gain = 1.0 + 0.5 * torch.cos(t / 100.0)
    return 0.9 * x + 0.3 * torch.tanh(gain * x + bias)


class ToyUNet(torch.nn.Module):
    """`toy_output` behind the diffusers UNet call sdgraph's denoiser makes; `batches` records the batch size of
    every call."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # a model manager casts it
        self.batches: list[int] = []

    def forward(self, x_in: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                return_dict: bool = True, **_: Any) -> tuple[torch.Tensor]:
        self.batches.append(x_in.shape[0])
        return (toy_output(x_in, t, encoder_hidden_states),)


def toy_text(seed: int) -> torch.Tensor:
    """A text context [1, TOKENS, TEXT_DIM], seeded."""
    return torch.randn((1, TOKENS, TEXT_DIM), generator=torch.Generator().manual_seed(seed)) * 0.5


def toy_latent(seed: int = 5) -> torch.Tensor:
    """A non-empty (unscaled) latent for the masked cases."""
    return torch.randn(LATENT_SHAPE, generator=torch.Generator().manual_seed(seed)) * 3.0


def toy_mask() -> torch.Tensor:
    """A soft noise mask [1, 1, 8, 8]: a ramp from 0 (keep) on the left to 1 (regenerate) on the right."""
    return torch.linspace(0.0, 1.0, 8).repeat(8, 1).reshape(1, 1, 8, 8)
