"""The extra UNet input channels of inpainting and InstructPix2Pix models ("c_concat"), built per conditioning
entry as ComfyUI builds them; the UNet gets [x * c_in, concat] along the channels.

A UNet's kind comes from its input channels against the latent's C: C (a plain model, nothing concatenated),
2C (InstructPix2Pix: the source image's latent) or 2C + 1 (inpainting: mask, then the masked image's latent).

- inpainting: the mask is the entry's "concat_mask" (InpaintModelConditioning's, at pixel size) or else the
  LATENT's noise mask; it is resized to the latent (centre crop to its aspect, bilinear) and rounded. The image
  is the entry's "concat_latent_image" scaled into the model's space by its latent format, or else the latent
  being sampled (scaled likewise unless it is all zeros). Without any mask: a mask of ones and the latent of a
  blank (all 0) image.
- InstructPix2Pix: the entry's "concat_latent_image" as it is (the VAE's unscaled latent: SD's pix2pix models
  were trained on it), else zeros.
Latents of another size are resized like the mask; batches are fitted with ComfyUI's `resize_to_batch_size`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# The latent (SD's 4 channels) of an all-zero (black) image: what an inpainting model sees with no mask given.
BLANK_INPAINT = (0.8223, -0.6876, 0.6364, 0.1380)


def concat_kind(unet: Any, latent_channels: int = 4) -> str | None:
    """"inpaint", "ip2p" or None, from the UNet config's input channels."""
    channels = int(getattr(getattr(unet, "config", None), "in_channels", latent_channels))
    if channels == latent_channels:
        return None
    if channels == 2 * latent_channels:
        return "ip2p"
    if channels == 2 * latent_channels + 1:
        return "inpaint"
    raise ValueError(f"the model's UNet takes {channels} input channels: sdgraph knows {latent_channels} (plain), "
                     f"{2 * latent_channels} (InstructPix2Pix) and {2 * latent_channels + 1} (inpainting)")


def center_resize(x: Tensor, height: int, width: int) -> Tensor:
    """[B, C, h, w] centre-cropped to the aspect of height x width, then resized bilinearly (ComfyUI's
    common_upscale with crop "center")."""
    old_h, old_w = x.shape[-2], x.shape[-1]
    old_aspect, new_aspect = old_w / old_h, width / height
    top = left = 0
    if old_aspect > new_aspect:
        left = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:
        top = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    x = x.narrow(-2, top, old_h - top * 2).narrow(-1, left, old_w - left * 2)
    return F.interpolate(x, size=(height, width), mode="bilinear")


def resize_batch(x: Tensor, batch: int) -> Tensor:
    """[n, ...] as [batch, ...], items picked evenly across the batch (ComfyUI's resize_to_batch_size)."""
    n = x.shape[0]
    if n == batch:
        return x
    if batch <= 1:
        return x[:batch]
    if batch < n:
        scale = (n - 1) / (batch - 1)
        index = [min(round(i * scale), n - 1) for i in range(batch)]
    else:
        scale = n / batch
        index = [min(math.floor((i + 0.5) * scale), n - 1) for i in range(batch)]
    return x[index]


def blank_inpaint_image(shape: tuple[int, ...], device: torch.device) -> Tensor:
    blank = torch.ones(shape, device=device)
    for channel, value in enumerate(BLANK_INPAINT[:shape[1]]):
        blank[:, channel] *= value
    return blank


@dataclass
class ConcatSource:
    """What the concat channels of a sampling run are built from besides an entry's own keys."""

    kind: str | None  # "inpaint" | "ip2p" | None
    shape: tuple[int, int, int, int]  # the latent being sampled, [B, C, h, w]
    samples: Tensor  # its LATENT samples, unscaled
    latent_format: Any
    device: torch.device
    dtype: torch.dtype
    noise_mask: Tensor | None = None  # the LATENT's noise mask at the latent's size, [B, 1, h, w]

    def build(self, extras: dict[str, Any]) -> Tensor | None:
        """The entry's concat tensor [B, channels, h, w] on the device in the UNet's dtype, or None."""
        if self.kind is None:
            return None
        out = self._inpaint(extras) if self.kind == "inpaint" else self._ip2p(extras)
        return out.to(self.dtype)

    def _fit(self, x: Tensor) -> Tensor:
        batch, _, h, w = self.shape
        x = x.to(self.device, torch.float32)
        if x.shape[1:] != torch.Size(self.shape[1:]):
            x = center_resize(x, h, w)
        return resize_batch(x, batch)

    def _ip2p(self, extras: dict[str, Any]) -> Tensor:
        image = extras.get("concat_latent_image")
        if image is None:
            return torch.zeros(self.shape, device=self.device)
        return self._fit(image)

    def _inpaint(self, extras: dict[str, Any]) -> Tensor:
        batch, _, h, w = self.shape
        mask = extras["concat_mask"] if "concat_mask" in extras else self.noise_mask
        if mask is None:
            ones = torch.ones((batch, 1, h, w), device=self.device)
            return torch.cat([ones, blank_inpaint_image(self.shape, self.device)], dim=1)
        image = extras.get("concat_latent_image")
        if image is None:
            image = self._sampled_latent()
        else:
            image = self.latent_format.process_in(image.to(self.device, torch.float32))
        mask = mask.to(self.device, torch.float32)
        mask = mask[:, :1] if mask.ndim == 4 else mask
        mask = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
        if mask.shape[-2:] != (h, w):
            mask = center_resize(mask, h, w)
        return torch.cat([resize_batch(mask.round(), batch), self._fit(image)], dim=1)

    def _sampled_latent(self) -> Tensor:
        samples = self.samples.to(self.device, torch.float32)
        return self.latent_format.process_in(samples) if torch.count_nonzero(samples) else samples
