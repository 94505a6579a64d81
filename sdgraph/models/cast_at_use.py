"""Weights stored in a narrow dtype (fp8) and widened to the compute dtype only while their layer runs.

`store_narrow(module, stored, compute)` converts every floating-point parameter to `stored` and wraps the
`forward` of each module that owns such parameters: for the length of one call its parameters hold copies in
`compute`, then the stored tensors are put back. The wrap sits inside `Module.__call__`, so it nests within the
stream hooks of `placement` (those bring the stored tensors to the device around the call; the wrap widens what
they brought). Buffers are left as they are.

Element-wise arithmetic is not defined on fp8 tensors: `widened_sum` is how a weight patch is added to one.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch

NARROW_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def is_narrow(dtype: torch.dtype) -> bool:
    return dtype in NARROW_DTYPES


def store_narrow(module: torch.nn.Module, stored: torch.dtype, compute: torch.dtype) -> None:
    """Keep the module's floating-point parameters in `stored`, computing each layer in `compute`."""
    if not is_narrow(stored):
        raise ValueError(f"cast-at-use storage is for fp8 dtypes {NARROW_DTYPES}, not {stored}")
    with torch.no_grad():
        for sub in module.modules():
            own = [p for p in sub._parameters.values() if p is not None and p.is_floating_point()]
            if not own:
                continue
            for param in own:
                param.data = param.data.to(stored)
            sub.forward = functools.partial(_widened_forward, sub, sub.forward, compute)


def _widened_forward(module: torch.nn.Module, forward: Callable[..., Any], compute: torch.dtype,
                     *args: Any, **kwargs: Any) -> Any:
    stored = {name: p.data for name, p in module._parameters.items() if p is not None and is_narrow(p.dtype)}
    try:
        for name, data in stored.items():
            module._parameters[name].data = data.to(compute)
        return forward(*args, **kwargs)
    finally:
        for name, data in stored.items():
            module._parameters[name].data = data


def widened_sum(weight: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """weight + delta computed in float32 and rounded (to nearest) back to the weight's dtype."""
    return (weight.float() + delta.to(device=weight.device, dtype=torch.float32)).to(weight.dtype)
