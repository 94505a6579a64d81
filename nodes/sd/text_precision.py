"""The text encoders' weight precision: half-precision values, computed in float32.

ComfyUI keeps every CLIP text encoder's weights in float16, on the CPU as on a GPU, and casts them to float32
layer by layer as it computes. A prompt's conditioning therefore carries the rounding of the weights to fp16 (about
2e-4 on a decoded picture, well above fp32 noise). sdgraph rounds the weights the same way when it loads an encoder
in a wider dtype, so the same checkpoint and prompt give ComfyUI's conditioning. Files already stored in fp16, as
most released checkpoints are, do not change. A LoRA's patched weights are rounded the same way (ComfyUI adds the
patch in fp32 and stores the sum in fp16).
"""
from __future__ import annotations

from typing import Any

import torch

HALF = torch.float16


def keep_half_values(slot: Any) -> None:
    """Round a managed text encoder's weights to fp16 values, and have the manager round patched weights too."""
    if torch.finfo(slot.dtype).bits > 16:
        round_weights_to_half(slot.module)
        slot.value_dtype = HALF


def round_weights_to_half(module: torch.nn.Module) -> None:
    """Round the module's floating-point parameters and buffers wider than fp16 to fp16 values, in place
    (the dtype stays: only the values change)."""
    with torch.no_grad():
        for tensor in (*module.parameters(), *module.buffers()):
            if tensor.is_floating_point() and torch.finfo(tensor.dtype).bits > 16:
                tensor.copy_(tensor.to(HALF))
