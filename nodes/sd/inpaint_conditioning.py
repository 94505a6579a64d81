"""Conditioning for models whose UNet reads extra input channels: inpainting models (latent + mask + masked-image
latent, 9 channels on SD) and InstructPix2Pix models (latent + the source image's latent, 8 channels).

The nodes only record what the sampler needs ("concat_latent_image": unscaled VAE latents [B, 4, h, w];
"concat_mask": [B, 1, H, W] at the image's pixel size); `nodes.sd.concat_cond` builds the UNet's extra channels
from them at sampling time, as ComfyUI does. Images are centre-cropped to multiples of 8 first.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sdgraph.limits import check_memory
from sdgraph.node import Boolean, Input, Node, Output
from sdgraph.nodes.sd.latent import crop_to_multiple
from sdgraph.nodes.sd.model_objects import VaeModel
from sdgraph.types import CONDITIONING, IMAGE, LATENT, MASK, VAE

MULTIPLE = 8  # ComfyUI crops these images to multiples of 8 whatever the VAE


def _with_concat(conditioning: list, **keys: Any) -> list[list[Any]]:
    return [[entry[0], {**entry[1], **keys}] for entry in conditioning]


def _check_image(pixels: Any, where: str) -> torch.Tensor:
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4:
        shape = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ValueError(f"{where}: expected an IMAGE [B, H, W, C], got {shape}")
    if pixels.shape[1] < MULTIPLE or pixels.shape[2] < MULTIPLE:
        raise ValueError(f"{where}: the image ({pixels.shape[2]}x{pixels.shape[1]}) is smaller than 8x8 pixels")
    return pixels


def grey_out(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A copy of the image with every pixel where the rounded mask is 1 set to grey 0.5 (colour channels)."""
    out = pixels.clone()
    keep = (1.0 - mask.round()).squeeze(1)
    for channel in range(3):
        out[:, :, :, channel] -= 0.5
        out[:, :, :, channel] *= keep
        out[:, :, :, channel] += 0.5
    return out


class InpaintModelConditioning(Node):
    """Prepare an inpainting model's conditioning: the masked image's latent and the mask go to the UNet's extra
    channels; the latent is the whole image's, with the mask as its noise mask when noise_mask is on."""

    category = "conditioning/inpaint"
    inputs = [Input("positive", CONDITIONING), Input("negative", CONDITIONING), Input("vae", VAE),
              Input("pixels", IMAGE), Input("mask", MASK), Boolean("noise_mask", True)]
    outputs = [Output(CONDITIONING, "positive"), Output(CONDITIONING, "negative"), Output(LATENT, "latent")]

    def run(self, positive: list, negative: list, vae: VaeModel, pixels: torch.Tensor, mask: torch.Tensor,
            noise_mask: bool = True) -> tuple:
        where = "InpaintModelConditioning"
        pixels = _check_image(pixels, f"{where}.pixels")
        if not isinstance(mask, torch.Tensor) or mask.ndim < 2:
            raise ValueError(f"{where}.mask: expected a MASK [B, H, W]")
        m = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
        check_memory(self.ctx.limits, f"{where}.mask", "the mask at the image's size", (m.shape[0], *pixels.shape[1:3]))
        if m.shape[0] not in (1, pixels.shape[0]):
            raise ValueError(f"{where}.mask: {m.shape[0]} masks for {pixels.shape[0]} images (give one, or one each)")
        m = F.interpolate(m, size=pixels.shape[1:3], mode="bilinear")
        cropped = crop_to_multiple(pixels, MULTIPLE)
        m = crop_to_multiple(m.movedim(1, -1), MULTIPLE).movedim(-1, 1)
        concat_latent = vae.encode(crop_to_multiple(grey_out(cropped, m), vae.downscale))
        latent: dict[str, Any] = {"samples": vae.encode(crop_to_multiple(pixels, vae.downscale))}
        if noise_mask:
            latent["noise_mask"] = m
        keys = {"concat_latent_image": concat_latent, "concat_mask": m}
        return (_with_concat(positive, **keys), _with_concat(negative, **keys), latent)


class InstructPixToPixConditioning(Node):
    """Prepare an InstructPix2Pix model's conditioning: the source image's latent goes to the UNet's extra
    channels; the latent to sample is empty (zeros) at its size."""

    category = "conditioning/instructpix2pix"
    inputs = [Input("positive", CONDITIONING), Input("negative", CONDITIONING), Input("vae", VAE),
              Input("pixels", IMAGE)]
    outputs = [Output(CONDITIONING, "positive"), Output(CONDITIONING, "negative"), Output(LATENT, "latent")]

    def run(self, positive: list, negative: list, vae: VaeModel, pixels: torch.Tensor) -> tuple:
        pixels = _check_image(pixels, "InstructPixToPixConditioning.pixels")
        cropped = crop_to_multiple(pixels, MULTIPLE)
        concat_latent = vae.encode(crop_to_multiple(cropped, vae.downscale))
        keys = {"concat_latent_image": concat_latent}
        return (_with_concat(positive, **keys), _with_concat(negative, **keys),
                {"samples": torch.zeros_like(concat_latent)})


NODES = [InpaintModelConditioning, InstructPixToPixConditioning]
