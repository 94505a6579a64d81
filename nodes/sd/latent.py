"""Latent nodes: empty latents, VAE encode/decode (incl. inpainting), noise masks, latent upscaling, and (from
`latent_files`) SaveLatent / LoadLatent, and (from `latent_ops`) composites, arithmetic, batches and transforms."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from sdgraph.limits import Limits, check_memory, current_limits, refusal
from sdgraph.node import Combo, Float, Input, Int, Node, Output
from sdgraph.paths import Dirs
from sdgraph.nodes.sd.common import MAX_RESOLUTION
from sdgraph.nodes.sd.latent_files import LoadLatent, SaveLatent
from sdgraph.nodes.sd.latent_ops import NODES as LATENT_OPS
from sdgraph.nodes.sd.model_objects import VaeModel
from sdgraph.nodes.sd.rebatch import NODES_LATENT as REBATCH_LATENTS
from sdgraph.nodes.sd.resize import CROPS, LATENT_METHODS, resize
from sdgraph.nodes.sd.vae_tiled import NODES as VAE_TILED
from sdgraph.types import IMAGE, LATENT, MASK, VAE


class EmptyLatent(Node):
    """An empty (zero) latent batch to start sampling from; zeros mean "empty": the sampler does not scale or
    shift them into the model's space (ComfyUI's convention)."""

    category = "latent"
    aliases = ("EmptyLatentImage",)
    inputs = [Int("width", 512, min=16, max=MAX_RESOLUTION, step=8),
              Int("height", 512, min=16, max=MAX_RESOLUTION, step=8), Int("batch_size", 1, min=1, max=4096)]
    outputs = [Output(LATENT)]

    def run(self, width: int, height: int, batch_size: int) -> tuple:
        shape = latent_shape(width, height, batch_size)
        check_memory(self.ctx.limits, "EmptyLatentImage.batch_size", "the latent", shape)
        return ({"samples": torch.zeros(shape)},)

    @classmethod
    def validate_inputs(cls, dirs: Dirs, width: int = 512, height: int = 512, batch_size: int = 1,
                        **_: Any) -> str | None:
        shape = latent_shape(width, height, batch_size)
        return refusal(lambda: check_memory(current_limits(), "EmptyLatentImage.batch_size", "the latent", shape))


def latent_shape(width: int, height: int, batch: int, channels: int = 4) -> tuple[int, int, int, int]:
    return (batch, channels, height // 8, width // 8)


def crop_to_multiple(pixels: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """Centre-crop [B,H,W,C] so that H and W are multiples of `multiple`."""
    h, w = (pixels.shape[1] // multiple) * multiple, (pixels.shape[2] // multiple) * multiple
    top, left = (pixels.shape[1] - h) // 2, (pixels.shape[2] - w) // 2
    return pixels[:, top:top + h, left:left + w, :]


class VAEDecode(Node):
    """Latents to images."""

    category = "latent"
    inputs = [Input("samples", LATENT), Input("vae", VAE)]
    outputs = [Output(IMAGE)]

    def run(self, samples: dict[str, Any], vae: VaeModel) -> tuple:
        batch, _, h, w = samples["samples"].shape
        check_memory(self.ctx.limits, "VAEDecode.samples", "the decoded images",
                     (batch, h * vae.downscale, w * vae.downscale, 3))
        return (vae.decode(samples["samples"]),)


class VAEEncode(Node):
    """Images to latents (for img2img)."""

    category = "latent"
    inputs = [Input("pixels", IMAGE), Input("vae", VAE)]
    outputs = [Output(LATENT)]

    def run(self, pixels: torch.Tensor, vae: VaeModel) -> tuple:
        return ({"samples": vae.encode(crop_to_multiple(pixels, vae.downscale))},)


def grow_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate a [B,1,H,W] mask (rounded to 0/1) by a square of `pixels`."""
    mask = mask.round()
    if pixels <= 0:
        return mask
    kernel = torch.ones(1, 1, pixels, pixels)
    pad = math.ceil((pixels - 1) / 2)
    grown = F.conv2d(mask, kernel, padding=pad)[..., :mask.shape[-2], :mask.shape[-1]]
    return grown.clamp(0, 1)


class VAEEncodeForInpaint(Node):
    """Encode an image with its masked part greyed out, and set the (grown) mask as the noise mask."""

    category = "latent/inpaint"
    inputs = [Input("pixels", IMAGE), Input("vae", VAE), Input("mask", MASK),
              Int("grow_mask_by", 6, min=0, max=64, step=1)]
    outputs = [Output(LATENT)]

    def run(self, pixels: torch.Tensor, vae: VaeModel, mask: torch.Tensor, grow_mask_by: int) -> tuple:
        m = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
        check_memory(self.ctx.limits, "VAEEncodeForInpaint.mask", "the mask at the image's size",
                     (m.shape[0], *pixels.shape[1:3]))
        m = F.interpolate(m, size=pixels.shape[1:3], mode="bilinear", align_corners=False)
        pixels = crop_to_multiple(pixels, vae.downscale).clone()
        m = crop_to_multiple(m.movedim(1, -1), vae.downscale).movedim(-1, 1)
        keep = (1.0 - m.round()).movedim(1, -1)
        pixels[..., :3] = (pixels[..., :3] - 0.5) * keep + 0.5
        return ({"samples": vae.encode(pixels), "noise_mask": grow_mask(m, grow_mask_by)},)


class SetLatentNoiseMask(Node):
    """Only regenerate where the mask is 1 (inpainting on an encoded image)."""

    category = "latent/inpaint"
    inputs = [Input("samples", LATENT), Input("mask", MASK)]
    outputs = [Output(LATENT)]

    def run(self, samples: dict[str, Any], mask: torch.Tensor) -> tuple:
        return ({**samples, "noise_mask": mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()},)


def _upscale_latent(samples: dict[str, Any], width: int, height: int, method: str, crop: str, limits: Limits,
                    where: str) -> dict[str, Any]:
    """Latents resized to width x height (latent pixels), refused before resizing when over the budget."""
    latent = samples["samples"]
    check_memory(limits, where, "the upscaled latent", (*latent.shape[:2], height, width))
    out = {**samples, "samples": resize(latent, width, height, method, crop)}
    mask = samples.get("noise_mask")
    if mask is not None:  # keep the mask in the same frame
        size = (mask.shape[-1] * width // latent.shape[-1], mask.shape[-2] * height // latent.shape[-2])
        check_memory(limits, where, "the upscaled noise mask", (*mask.shape[:-2], size[1], size[0]))
        out["noise_mask"] = resize(mask, size[0], size[1], "bilinear", crop)
    return out


class LatentUpscale(Node):
    """Resize latents to a size in pixels (0 keeps the aspect ratio from the other side)."""

    category = "latent"
    inputs = [Input("samples", LATENT), Combo("upscale_method", LATENT_METHODS),
              Int("width", 512, min=0, max=MAX_RESOLUTION, step=8), Int("height", 512, min=0, max=MAX_RESOLUTION, step=8),
              Combo("crop", CROPS)]
    outputs = [Output(LATENT)]

    def run(self, samples: dict[str, Any], upscale_method: str, width: int, height: int, crop: str) -> tuple:
        h, w = samples["samples"].shape[-2:]
        if width == 0 and height == 0:
            return (samples,)
        width = width or max(64, round(height / h * w / 8) * 8)
        height = height or max(64, round(width / w * h / 8) * 8)
        return (_upscale_latent(samples, width // 8, height // 8, upscale_method, crop, self.ctx.limits,
                                "LatentUpscale.width"),)


class LatentUpscaleBy(Node):
    """Resize latents by a factor."""

    category = "latent"
    inputs = [Input("samples", LATENT), Combo("upscale_method", LATENT_METHODS),
              Float("scale_by", 1.5, min=0.01, max=8.0, step=0.01)]
    outputs = [Output(LATENT)]

    def run(self, samples: dict[str, Any], upscale_method: str, scale_by: float) -> tuple:
        h, w = samples["samples"].shape[-2:]
        return (_upscale_latent(samples, round(w * scale_by), round(h * scale_by), upscale_method, "disabled",
                                self.ctx.limits, "LatentUpscaleBy.scale_by"),)


NODES = [EmptyLatent, VAEDecode, VAEEncode, VAEEncodeForInpaint, SetLatentNoiseMask, LatentUpscale, LatentUpscaleBy,
         SaveLatent, LoadLatent, *LATENT_OPS, *REBATCH_LATENTS, *VAE_TILED]
