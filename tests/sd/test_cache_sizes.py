"""What the output cache counts for model handles: the bytes a handle holds itself, never the weights, which
the model manager owns (and bounds) whether or not a cached output still refers to them."""
from __future__ import annotations

from typing import Any

import torch

from sdgraph.cache import sizeof
from sdgraph.models import module_nbytes
from sdgraph.nodes.sd.model_objects import LoraPatch


def patch(rank: int = 4, width: int = 64) -> LoraPatch:
    deltas = {"down_blocks.0.attentions.0.proj_in": (torch.zeros(width, rank), torch.zeros(rank, width), 1.0)}
    return LoraPatch("test-lora", 1.0, deltas)


def test_handles_count_their_own_tensors_not_the_managed_weights(sd1: tuple[Any, Any, Any]) -> None:
    model, clip, vae = sd1
    assert sizeof(model) == model.alphas_cumprod.nbytes == 1000 * 8
    assert sizeof(model) < module_nbytes(model.slot.module) / 100
    assert sizeof(clip) == 0 and sizeof(vae) == 0
    assert sizeof((model, clip, vae)) == sizeof(model)


def test_lora_deltas_are_counted(sd1: tuple[Any, Any, Any]) -> None:
    model, clip, _ = sd1
    lora = patch()
    delta_bytes = 2 * 64 * 4 * 4  # up and down, float32
    assert sizeof(model.with_patch(lora)) == model.alphas_cumprod.nbytes + delta_bytes
    assert sizeof(clip.with_patch(0, lora)) == delta_bytes
