"""A diffusers Transformer2DModel evaluated with ComfyUI's attention patch points (transformer_options).

Used by `nodes.sd.unet_walk` only when a MODEL carries patches. Each BasicTransformerBlock runs as ComfyUI's
does, over the diffusers block's own modules (norm1/attn1/norm2/attn2/norm3/ff):

- "attn1_patch" / "attn2_patch": `p(n, context, value, extra_options) -> (n, context, value)`, the inputs of the
  q / k / v projections (for attn1, context and value start as n itself; for attn2 as the text context);
- patches_replace "attn1" / "attn2", keyed (block_name, number, block_index) first, then (block_name, number):
  `f(q, k, v, extra_options) -> out` replaces the attention between the projections and to_out;
- "attn1_output_patch" / "attn2_output_patch": `p(out, extra_options) -> out` after to_out;
- "middle_patch": `p(x, extra_options) -> x` on the hidden states between the self- and cross-attention.

`extra_options` is the call's transformer_options without "patches" / "patches_replace", plus "n_heads",
"dim_head" and "attn_precision". `activations_shape` (the transformer's input shape) and `block_index` (the
block inside the transformer) are written into transformer_options, and "transformer_index" is counted up after
each transformer, as ComfyUI's UNet does.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Options = dict[str, Any]


def attention(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None = None) -> Tensor:
    """Scaled dot-product attention of [B, N, heads * d] projections (ComfyUI's `optimized_attention`). k and v
    are split into q's batch size, as ComfyUI splits them (a patch may tile q into more, shorter rows)."""
    batch, dim_head = q.shape[0], q.shape[-1] // heads
    q, k, v = (t.view(batch, -1, heads, dim_head).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(batch, -1, heads * dim_head).to(q.dtype)


def check_transformer(module: torch.nn.Module, where: str) -> None:
    """Refuse transformer variants this walk does not reproduce (none of them occurs in SD 1.x / 2.x / XL)."""
    if not getattr(module, "is_input_continuous", False):
        raise NotImplementedError(f"model patches: {where} is not an image transformer over feature maps")
    for index, block in enumerate(module.transformer_blocks):
        if block.norm_type != "layer_norm" or block.pos_embed is not None or block.attn2 is None:
            raise NotImplementedError(f"model patches: {where}.transformer_blocks.{index} is not an SD block")
        for attn in (block.attn1, block.attn2):
            odd = (attn.spatial_norm, attn.group_norm, attn.norm_q, attn.norm_k, attn.norm_cross)
            if any(part is not None for part in odd) or attn.residual_connection or attn.rescale_output_factor != 1:
                raise NotImplementedError(f"model patches: {where}.transformer_blocks.{index} has an unusual "
                                          "attention layer")
            if type(attn.processor).__name__ not in ("AttnProcessor2_0", "AttnProcessor"):
                raise NotImplementedError(f"model patches: {where} has a custom attention processor "
                                          f"({type(attn.processor).__name__}), which the patched path would skip")


def run_transformer(module: torch.nn.Module, x: Tensor, context: Tensor, options: Options) -> Tensor:
    """Transformer2DModel.forward (continuous input) with the patch points; counts transformer_index up."""
    options["activations_shape"] = list(x.shape)
    batch, _, height, width = x.shape
    h = module.norm(x)
    if module.use_linear_projection:
        inner = h.shape[1]
        h = module.proj_in(h.permute(0, 2, 3, 1).reshape(batch, height * width, inner))
    else:
        h = module.proj_in(h)
        inner = h.shape[1]
        h = h.permute(0, 2, 3, 1).reshape(batch, height * width, inner)
    for index, block in enumerate(module.transformer_blocks):
        options["block_index"] = index
        h = run_block(block, h, context, options)
    if module.use_linear_projection:
        h = module.proj_out(h).reshape(batch, height, width, inner).permute(0, 3, 1, 2).contiguous()
    else:
        h = module.proj_out(h.reshape(batch, height, width, inner).permute(0, 3, 1, 2).contiguous())
    options["transformer_index"] = options.get("transformer_index", 0) + 1
    return h + x


def run_block(block: torch.nn.Module, x: Tensor, context: Tensor, options: Options) -> Tensor:
    """One BasicTransformerBlock, with ComfyUI's patch points in ComfyUI's order."""
    patches = options.get("patches", {})
    replace = options.get("patches_replace", {})
    extra = {key: value for key, value in options.items() if key not in ("patches", "patches_replace")}
    extra["n_heads"] = block.attn1.heads
    extra["dim_head"] = block.attn1.inner_dim // block.attn1.heads
    extra["attn_precision"] = None
    keys = _replace_keys(options)

    n = block.norm1(x)
    own_context = context if block.only_cross_attention else None
    n = _attend(block.attn1, n, own_context, patches.get("attn1_patch"), replace.get("attn1"), keys, extra)
    for patch in patches.get("attn1_output_patch", ()):
        n = patch(n, extra)
    x = n + x
    for patch in patches.get("middle_patch", ()):
        x = patch(x, extra)

    n = _attend(block.attn2, block.norm2(x), context, patches.get("attn2_patch"), replace.get("attn2"), keys,
                extra)
    for patch in patches.get("attn2_output_patch", ()):
        n = patch(n, extra)
    x = n + x
    return _feed_forward(block, block.norm3(x)) + x


def _replace_keys(options: Options) -> tuple[Any, ...]:
    """The patches_replace keys of this block, most specific first."""
    block = options.get("block")
    if block is None:
        return ()
    return ((block[0], block[1], options.get("block_index", 0)), block)


def _attend(attn: torch.nn.Module, n: Tensor, context: Tensor | None, patches: list[Callable] | None,
            replacements: dict[Any, Callable] | None, keys: tuple[Any, ...], extra: Options) -> Tensor:
    """An attention layer: the input patches, then the projections and either a replacement or plain attention,
    then to_out. `context` None means self-attention over n."""
    value = None
    if patches:
        if context is None:
            context = n
        value = context
        for patch in patches:
            n, context, value = patch(n, context, value, extra)
    replacement = next((replacements[key] for key in keys if key in replacements), None) if replacements else None
    if context is None:
        context = n
    if value is None:
        value = context
    q, k, v = attn.to_q(n), attn.to_k(context), attn.to_v(value)
    out = replacement(q, k, v, extra) if replacement is not None else attention(q, k, v, attn.heads)
    return attn.to_out[1](attn.to_out[0](out))


def _feed_forward(block: torch.nn.Module, n: Tensor) -> Tensor:
    if getattr(block, "_chunk_size", None) is None:
        return block.ff(n)
    from diffusers.models.attention import _chunked_feed_forward  # noqa: PLC0415 - only when chunking is on

    return _chunked_feed_forward(block.ff, n, block._chunk_dim, block._chunk_size)
