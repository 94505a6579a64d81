"""GLIGEN boxes at sampling time: a conditioning entry's "gligen" extra as a transformer "middle_patch".

The extra is ComfyUI's tuple ("position", gligen_model, [(pooled [1, D], h, w, y, x), ...]) with the boxes in
latent pixels (GLIGENTextBoxApply divides the node's pixel inputs by 8). For each UNet call that evaluates such
an entry, as ComfyUI's `get_area_and_mult` does:

- the boxes become (x / W, y / H, (x + w) / W, (y + h) / H) of the latent the call sees (the entry's area crop
  when it has an area), neither clamped nor checked, padded to 30 with empty slots and repeated over the call's
  batch; the position net turns them into grounding tokens once per call;
- the patch runs the gated attention module numbered transformer_options["transformer_index"] on the hidden
  states after each transformer block's self-attention; it is appended after the MODEL's own middle patches;
- an entry with a gligen extra is evaluated in a UNet call of its own (ComfyUI never batches conds carrying
  patches), on every step its window allows.

Before sampling, the other sides get the positive's boxes (ComfyUI's `apply_empty_x_to_equal_area` for
"gligen"): unless some entry without an area on a side already has a gligen extra, the positive's area-less
gligen entries hand their extra to that side's area-less entries, in turn (the n-th to entry n modulo their
count; a later one replaces an earlier one on the same entry). Twins of area entries carry their original's extra
(see `cond_areas`).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from sdgraph.nodes.sd.gligen_net import GligenNet, object_inputs

Tensor = torch.Tensor
Patches = dict[str, list[Callable[..., Any]]]


class GligenPatch:
    """The middle patch of one UNet call: its grounding tokens and the network's gated modules."""

    def __init__(self, net: GligenNet, tokens: Tensor) -> None:
        self.net = net
        self.tokens = tokens

    def __call__(self, x: Tensor, extra_options: dict[str, Any]) -> Tensor:
        index = int(extra_options.get("transformer_index", 0))
        if index >= len(self.net.fusers):
            raise ValueError(f"GLIGEN: the UNet's transformer {index} has no gated attention module in the GLIGEN "
                             f"file (it has {len(self.net.fusers)}): the file was made for another model")
        fuser = self.net.fusers[index]
        if x.shape[-1] != fuser.width:
            raise ValueError(f"GLIGEN: the UNet's transformer {index} is {x.shape[-1]} wide, the file's module "
                             f"{self.net.prefixes[index]}* {fuser.width}: the file was made for another model")
        return fuser(x, self.tokens.to(device=x.device, dtype=x.dtype))


def boxes_of(params: Sequence[Sequence[Any]], height: int, width: int) -> list[tuple[float, float, float, float]]:
    """(x1, y1, x2, y2) fractions of a height x width latent of (pooled, h, w, y, x) box entries."""
    return [(p[4] / width, p[3] / height, (p[4] + p[2]) / width, (p[3] + p[1]) / height) for p in params]


def middle_patch(gligen: Sequence[Any], input_shape: Sequence[int], device: torch.device) -> GligenPatch:
    """The patch of an entry's gligen extra for a call on input of `input_shape` [B, C, h, w]."""
    kind, model = gligen[0], gligen[1]
    params = list(gligen[2]) if kind == "position" else []
    net = model.placed()
    batch, _, height, width = (int(v) for v in input_shape)
    boxes, masks, texts = object_inputs(boxes_of(params, height, width), [p[0] for p in params], batch,
                                        net.text_dim, net.token_dim)
    with torch.no_grad():
        tokens = net.position_net(boxes.to(device), masks.to(device), texts.to(device))
    return GligenPatch(net, tokens)


def cond_patches(gligen: Sequence[Any] | None, input_shape: Sequence[int], device: torch.device) -> Patches | None:
    """ComfyUI's per-cond patches of an entry: {"middle_patch": [...]} for a gligen extra, else None."""
    if gligen is None:
        return None
    return {"middle_patch": [middle_patch(gligen, input_shape, device)]}


def with_cond_patches(options: dict[str, Any], patches: Patches | None) -> dict[str, Any]:
    """transformer_options with a cond's patches appended after the MODEL's (a new dict; nothing is mutated)."""
    if not patches:
        return options
    merged = dict(options.get("patches", {}))
    for name, fns in patches.items():
        merged[name] = list(merged.get(name, ())) + list(fns)
    return {**options, "patches": merged}


def share_with_other_side(positive: Sequence[Sequence[Any]], other: list[list[Any]]) -> None:
    """Give `other`'s area-less entries the positive's area-less gligen extras (in place; see the docstring)."""
    def plain(pair: Sequence[Any]) -> bool:
        return pair[1].get("area") is None

    extras = [p[1]["gligen"] for p in positive if plain(p) and p[1].get("gligen") is not None]
    if not extras or any(plain(p) and p[1].get("gligen") is not None for p in other):
        return
    targets = [(i, pair) for i, pair in enumerate(other) if plain(pair)]
    if not targets:
        return  # ComfyUI fails here (a modulo by zero); nothing sensible to hand the boxes to
    for n, extra in enumerate(extras):
        i, pair = targets[n % len(targets)]
        other[i] = [pair[0], {**pair[1], "gligen": extra}]
