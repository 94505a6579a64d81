"""Fitting a tensor's batch to another's: one item is broadcast, several are cycled."""
from __future__ import annotations

import torch


def to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """``tensor`` [n, ...] as [batch, ...]: unchanged when n == batch, broadcast (a view) when n == 1, otherwise
    its items repeated in order and cut to ``batch``."""
    count = tensor.shape[0]
    if count == batch:
        return tensor
    if count == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    return tensor.repeat((batch + count - 1) // count, *[1] * (tensor.dim() - 1))[:batch]
