"""ComfyUI's `latent_preview` for plugins: the step callback a sampler reports progress (and previews) through.

Previews are sdgraph's latent-to-RGB JPEGs, made when the user asked for previews (sdgraph's `--preview`).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from sdgraph.comfy_layer import binding
from sdgraph.nodes.sd.preview import jpeg_preview, latent_to_rgb, previews_enabled

import comfy.utils
from comfy.taesd.taesd import TAESD  # noqa: F401 - packs import it from here; sdgraph has no TAESD model

MAX_PREVIEW_RESOLUTION = 512


class LatentPreviewer:
    """Turns a step's x0 into a preview; subclasses give decode_latent_to_preview(x0) -> PIL image."""

    def decode_latent_to_preview(self, x0: torch.Tensor) -> Any:
        return None

    def decode_latent_to_preview_image(self, preview_format: str, x0: torch.Tensor) -> tuple[str, Any, int]:
        return ("JPEG", self.decode_latent_to_preview(x0), MAX_PREVIEW_RESOLUTION)


class Latent2RGBPreviewer(LatentPreviewer):
    """sdgraph's latent-to-RGB preview of the first latent of a batch (SD 1.x / 2.x or SDXL factors)."""

    def __init__(self, sdxl: bool = False) -> None:
        self.sdxl = sdxl

    def decode_latent_to_preview(self, x0: torch.Tensor) -> Any:
        from PIL import Image  # noqa: PLC0415

        return Image.fromarray(latent_to_rgb(x0, self.sdxl).numpy(), "RGB")


class TAESDPreviewerImpl(LatentPreviewer):
    """A preview from a decoder object (`decode(latent) -> [B, C, H, W]` in -1..1, as a TAESD gives)."""

    def __init__(self, taesd: Any) -> None:
        self.taesd = taesd

    def decode_latent_to_preview(self, x0: torch.Tensor) -> Any:
        from PIL import Image  # noqa: PLC0415

        decoded = self.taesd.decode(x0[:1])[0].movedim(0, -1)
        pixels = ((decoded + 1.0) * 127.5).clamp(0, 255).to(device="cpu", dtype=torch.uint8)
        return Image.fromarray(pixels.numpy(), "RGB")


def get_previewer(device: Any, latent_format: Any) -> LatentPreviewer | None:
    """A previewer when the user asked for previews (sdgraph's --preview), else None."""
    if not previews_enabled(binding.services().settings):
        return None
    return Latent2RGBPreviewer(sdxl=abs(getattr(latent_format, "scale_factor", 0.18215) - 0.13025) < 1e-6)


def prepare_callback(model: Any, steps: int, x0_output_dict: dict[str, Any] | None = None
                     ) -> Callable[[int, torch.Tensor, torch.Tensor, int], None]:
    """callback(step, x0, x, total_steps): progress step+1 of total_steps, with a preview of x0 if enabled;
    x0 is also left in x0_output_dict["x0"] when a dict is given."""
    pbar = comfy.utils.ProgressBar(steps)
    previews = previews_enabled(binding.services().settings)
    sdxl = bool(getattr(model, "is_sdxl", False))

    def callback(step: int, x0: torch.Tensor, x: torch.Tensor, total_steps: int) -> None:
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        preview = jpeg_preview(x0, sdxl) if previews and x0 is not None and x0.ndim == 4 else None
        pbar.update_absolute(step + 1, total_steps, preview)

    return callback
