"""`comfy.ldm.modules.attention` for plugins: ComfyUI's attention call, computed with torch's SDPA.

`optimized_attention(q, k, v, heads, mask=None, skip_reshape=False, skip_output_reshape=False)` takes q/k/v as
[B, tokens, heads * dim_head] (or [B, heads, tokens, dim_head] with skip_reshape) and returns
[B, tokens, heads * dim_head] (or [B, heads, tokens, dim_head] with skip_output_reshape); a mask of 2 or 3
dimensions gains the batch / heads dimensions it lacks. It is the attention patches (IPAdapter's, ...) compute
with, and what attn1/attn2 replacement patches receive. Every backend name points at this one implementation;
a `transformer_options["optimized_attention_override"]` is called in its place by `wrap_attn`.
The UNet building blocks (CrossAttention, SpatialTransformer, ...) are sdgraph's diffusers UNet's, not these.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import torch

from sdgraph.comfy_layer import unsupported


def wrap_attn(func: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """func, or the override a transformer_options asks for (called with func and the same arguments)."""
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
        if kwargs.pop("_inside_attn_wrapper", False):
            return func(*args, **kwargs)
        override = (kwargs.get("transformer_options") or {}).get("optimized_attention_override")
        if override is not None:
            return override(func, *args, _inside_attn_wrapper=True, **kwargs)
        return func(*args, **kwargs)

    return wrapper


@wrap_attn
def attention_pytorch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: Any = None,
                      attn_precision: Any = None, skip_reshape: bool = False, skip_output_reshape: bool = False,
                      **kwargs: Any) -> torch.Tensor:
    if skip_reshape:
        batch, _, _, dim_head = q.shape
    else:
        batch, dim_head = q.shape[0], q.shape[-1] // heads
        q, k, v = (t.reshape(batch, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        mask = mask.unsqueeze(0) if mask.ndim == 2 else mask
        mask = mask.unsqueeze(1) if mask.ndim == 3 else mask
    if attn_precision == torch.float32 and q.dtype != torch.float32:
        out = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask
                                                               ).to(q.dtype)
    else:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if skip_output_reshape:
        return out
    return out.transpose(1, 2).reshape(batch, -1, heads * dim_head)


attention_basic = attention_split = attention_sub_quad = attention_pytorch
attention_xformers = attention_sage = attention_flash = attention_pytorch
optimized_attention = optimized_attention_masked = attention_pytorch


def optimized_attention_for_device(device: Any = None, mask: bool = False, small_input: bool = False
                                   ) -> Callable[..., torch.Tensor]:
    return attention_pytorch


unsupported.define(globals(), "ComfyUI's own UNet building blocks (sdgraph's UNets are diffusers')",
                   ("CrossAttention", "BasicTransformerBlock", "SpatialTransformer", "SpatialVideoTransformer",
                    "FeedForward", "GEGLU"))
