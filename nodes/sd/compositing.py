"""Porter-Duff compositing of two images with their alpha masks (MASK is 1 - alpha: 1 where transparent)."""
from __future__ import annotations

from typing import Callable

import torch

from sdgraph.node import Combo, Input, Node, Output
from sdgraph.nodes.sd.latent_ops import fit_to
from sdgraph.nodes.sd.mask_nodes import as_masks
from sdgraph.types import IMAGE, MASK

Pair = tuple[torch.Tensor, torch.Tensor]
Mode = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], Pair]


def _union(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a + b - a * b


# Each mode on premultiplied colours: (source colour, source alpha, destination colour, destination alpha) ->
# (colour, alpha), still premultiplied.
MODES: dict[str, Mode] = {
    "ADD": lambda s, sa, d, da: ((s + d).clamp(0, 1), (sa + da).clamp(0, 1)),
    "CLEAR": lambda s, sa, d, da: (torch.zeros_like(d), torch.zeros_like(da)),
    "DARKEN": lambda s, sa, d, da: ((1 - da) * s + (1 - sa) * d + torch.minimum(s, d), _union(sa, da)),
    "DST": lambda s, sa, d, da: (d, da),
    "DST_ATOP": lambda s, sa, d, da: (sa * d + (1 - da) * s, sa),
    "DST_IN": lambda s, sa, d, da: (d * sa, sa * da),
    "DST_OUT": lambda s, sa, d, da: ((1 - sa) * d, (1 - sa) * da),
    "DST_OVER": lambda s, sa, d, da: (d + (1 - da) * s, da + (1 - da) * sa),
    "LIGHTEN": lambda s, sa, d, da: ((1 - da) * s + (1 - sa) * d + torch.maximum(s, d), _union(sa, da)),
    "MULTIPLY": lambda s, sa, d, da: (s * d, sa * da),
    "OVERLAY": lambda s, sa, d, da: (torch.where(2 * d < da, 2 * s * d, sa * da - 2 * (da - s) * (sa - d)),
                                     _union(sa, da)),
    "SCREEN": lambda s, sa, d, da: (s + d - s * d, _union(sa, da)),
    "SRC": lambda s, sa, d, da: (s, sa),
    "SRC_ATOP": lambda s, sa, d, da: (da * s + (1 - sa) * d, da),
    "SRC_IN": lambda s, sa, d, da: (s * da, sa * da),
    "SRC_OUT": lambda s, sa, d, da: ((1 - da) * s, (1 - da) * sa),
    "SRC_OVER": lambda s, sa, d, da: (s + (1 - sa) * d, sa + (1 - sa) * da),
    "XOR": lambda s, sa, d, da: ((1 - da) * s + (1 - sa) * d, (1 - da) * sa + (1 - sa) * da),
}


def porter_duff(source: torch.Tensor, source_mask: torch.Tensor, destination: torch.Tensor,
                destination_mask: torch.Tensor, mode: str) -> Pair:
    """[..., C] colours and [..., 1] masks composited by `mode`: the colour divided back by its alpha (0 where
    the alpha is about 0) and clamped to 0..1, and the result's mask."""
    source_alpha, destination_alpha = 1 - source_mask, 1 - destination_mask
    colour, alpha = MODES[mode](source * source_alpha, source_alpha, destination * destination_alpha,
                                destination_alpha)
    colour = torch.where(alpha > 1e-5, colour / alpha, torch.zeros_like(colour)).clamp(0, 1)
    return colour, 1 - alpha


def _fit(hwc: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[H, W, C] resized (bicubic, after ComfyUI's centre crop to the aspect ratio) to height x width."""
    return fit_to(hwc.movedim(-1, 0)[None], height, width, "bicubic")[0].movedim(0, -1)


class PorterDuffImageComposite(Node):
    """Composite a source image over, under, in or out of a destination image by one of the Porter-Duff modes,
    each with its alpha mask; the source and both masks are resized to the destination's size."""

    category = "mask/compositing"
    inputs = [Input("source", IMAGE), Input("source_alpha", MASK), Input("destination", IMAGE),
              Input("destination_alpha", MASK), Combo("mode", tuple(MODES), default="DST")]
    outputs = [Output(IMAGE), Output(MASK)]

    def run(self, source: torch.Tensor, source_alpha: torch.Tensor, destination: torch.Tensor,
            destination_alpha: torch.Tensor, mode: str) -> tuple:
        if mode not in MODES:
            raise ValueError(f"PorterDuffImageComposite.mode: {mode!r} is not one of {', '.join(MODES)}")
        if source.shape[-1] != destination.shape[-1]:
            raise ValueError(f"PorterDuffImageComposite.source: {source.shape[-1]} channels, the destination has "
                             f"{destination.shape[-1]}")
        source_alpha, destination_alpha = as_masks(source_alpha), as_masks(destination_alpha)
        count = min(len(source), len(source_alpha), len(destination), len(destination_alpha))
        height, width = destination.shape[1:3]
        colours, masks = [], []
        for i in range(count):  # one item at a time, as ComfyUI does (each input keeps its own size until here)
            dst_mask = destination_alpha[i][..., None]
            if dst_mask.shape[:2] != (height, width):
                dst_mask = _fit(dst_mask, height, width)
            src = source[i] if source.shape[1:3] == (height, width) else _fit(source[i], height, width)
            src_mask = source_alpha[i][..., None]
            if src_mask.shape != dst_mask.shape:
                src_mask = _fit(src_mask, height, width)
            colour, mask = porter_duff(src.to(destination), src_mask.to(destination), destination[i],
                                       dst_mask.to(destination), mode)
            colours.append(colour)
            masks.append(mask[..., 0])
        return (torch.stack(colours), torch.stack(masks))


NODES = [PorterDuffImageComposite]
