"""A cheap per-step preview: the denoised latent projected to RGB by a fixed linear map (no VAE decode).

The factors are the well-known least-squares fits from latent channels to RGB of the SD 1.x and SDXL VAEs
(published with several UIs); they apply to latents in the model's (scaled) space, where the sampler's steps
report their denoised estimate, not to the unscaled LATENT samples.
"""
from __future__ import annotations

import io

import torch

SD1_RGB_FACTORS = ((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
                   (-0.2120, -0.2616, -0.7177))
SDXL_RGB_FACTORS = ((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
                    (-0.3165, -0.2492, -0.2188))
SDXL_RGB_BIAS = (0.1084, -0.0175, -0.0011)

PREVIEW_ON = ("latent2rgb", "auto", "on", True)


def previews_enabled(settings: dict) -> bool:
    """Whether the user asked for previews: setting "preview" = "latent2rgb" (or "auto"/"on"/True)."""
    return settings.get("preview", "none") in PREVIEW_ON


def latent_to_rgb(latent: torch.Tensor, sdxl: bool = False) -> torch.Tensor:
    """The first item of a latent batch [B, 4, h, w] as a uint8 CPU image [h, w, 3]."""
    x = latent[0, :4].float()
    factors = torch.tensor(SDXL_RGB_FACTORS if sdxl else SD1_RGB_FACTORS, device=x.device)
    rgb = torch.einsum("chw,cr->hwr", x, factors)
    if sdxl:
        rgb = rgb + torch.tensor(SDXL_RGB_BIAS, device=x.device)
    return ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).cpu()


def jpeg_preview(latent: torch.Tensor, sdxl: bool = False, quality: int = 80) -> tuple[str, bytes]:
    """("JPEG", bytes) of the latent's RGB projection, the form the server sends as a binary preview."""
    from PIL import Image  # noqa: PLC0415

    buffer = io.BytesIO()
    Image.fromarray(latent_to_rgb(latent, sdxl).numpy(), "RGB").save(buffer, format="JPEG", quality=quality)
    return "JPEG", buffer.getvalue()
