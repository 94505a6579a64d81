"""`comfy_extras.nodes_mask` for plugins: sdgraph's mask nodes, and `composite`, the paste they are built on."""
from __future__ import annotations

import torch

from sdgraph.comfy_layer.extras import reexport

import comfy.utils

reexport(globals(), ("LatentCompositeMasked", "ImageCompositeMasked", "MaskToImage", "ImageToMask",
                     "ImageColorToMask", "SolidMask", "InvertMask", "CropMask", "MaskComposite", "FeatherMask",
                     "GrowMask", "ThresholdMask", "MaskPreview"))


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None = None,
              multiplier: int = 8, resize_source: bool = False) -> torch.Tensor:
    """Paste source [B, C, h, w] into destination [B, C, H, W] (changed in place and returned) with its corner at
    (x, y) // multiplier (8 for latents given pixel offsets, 1 for images moved to channels-first); the mask
    (1 = source, resized to the source) blends them; resize_source first stretches the source to the
    destination's size; the source batch repeats to the destination's. Negative offsets cut the source."""
    source = source.to(destination.device)
    if resize_source:
        source = torch.nn.functional.interpolate(source, size=destination.shape[-2:], mode="bilinear")
    source = comfy.utils.repeat_to_batch_size(source, destination.shape[0])
    if mask is None:
        mask = torch.ones_like(source)
    else:
        mask = mask.to(destination.device).reshape(-1, 1, *mask.shape[-2:])
        mask = torch.nn.functional.interpolate(mask, size=source.shape[-2:], mode="bilinear")
        mask = comfy.utils.repeat_to_batch_size(mask, source.shape[0])
    left, top = x // multiplier, y // multiplier
    cut_x, cut_y = max(0, -left), max(0, -top)
    left, top = max(0, left), max(0, top)
    w = min(source.shape[-1] - cut_x, destination.shape[-1] - left)
    h = min(source.shape[-2] - cut_y, destination.shape[-2] - top)
    if w <= 0 or h <= 0:
        return destination
    src = source[..., cut_y:cut_y + h, cut_x:cut_x + w]
    m = mask[..., cut_y:cut_y + h, cut_x:cut_x + w]
    region = destination[..., top:top + h, left:left + w]
    destination[..., top:top + h, left:left + w] = m * src + (1 - m) * region
    return destination
