"""unCLIP image conditioning: CLIP image embeddings, noise-augmented, as the UNet's class-embedding input ("y").

unCLIPConditioning appends {"clip_vision_output", "strength", "noise_augmentation"} to each entry's
"unclip_conditioning" list. When sampling, a UNet with a projection class embedding (SD 2.1 unCLIP: ADM width
2048 for ViT-H, 1536 for ViT-L) gets, per entry, ComfyUI's ADM vector:

- each image embedding e of each unCLIP item: noise level n = round(999 * noise_augmentation); the embedding is
  noised as a diffusion sample at step n of the squared-cosine (Karlo) schedule, z = sqrt(abar_n) e +
  sqrt(1 - abar_n) noise, the noise drawn from a CPU generator seeded with the sampling seed - 10; then
  y = strength * [z, sinusoidal_embedding(n)]. The embedding's normalising statistics are the identity: ComfyUI
  builds the augmentor without the Karlo stats file and does not read any from the checkpoint;
- several embeddings: their y are summed, and the first half is noised again at the level of the entry's
  "unclip_noise_augment_merge" (default 0.05), its noise continuing that generator's stream as ComfyUI's global
  generator does;
- an entry without unCLIP items gets zeros (so strength 0, which leaves the conditioning as it is, equals none).

The embedding width must be half the ADM width (ComfyUI's augmentors assume it). SDXL ("ReVision"): an entry's
unCLIP items replace its pooled text embedding with the noised embedding z (no merge noise by default).
A UNet without class embedding (SD 1.x/2.x) ignores unCLIP items, as ComfyUI's does.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from functools import lru_cache
from typing import Any, Iterator

import numpy as np
import torch

from sdgraph.node import Float, Input, Node, Output
from sdgraph.types import CONDITIONING

CLIP_VISION_OUTPUT = "CLIP_VISION_OUTPUT"
MAX_NOISE_LEVEL = 1000
SEED_OFFSET = -10
MERGE_DEFAULT = 0.05
_SEED = contextvars.ContextVar("sdgraph_sampling_seed", default=0)

Tensor = torch.Tensor


@contextlib.contextmanager
def sampling_seed(seed: int) -> Iterator[None]:
    """The sampling run's seed while its denoiser is built (the ADM noise is drawn from it, as in ComfyUI)."""
    token = _SEED.set(int(seed))
    try:
        yield
    finally:
        _SEED.reset(token)


def current_seed() -> int:
    return _SEED.get()


@lru_cache(maxsize=1)
def _schedule() -> tuple[Tensor, Tensor]:
    """sqrt(abar) and sqrt(1 - abar) of the squared-cosine schedule (1000 steps, betas capped at 0.999), float32
    from float64 values as ComfyUI keeps them."""
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = np.array([min(1 - alpha_bar((i + 1) / MAX_NOISE_LEVEL) / alpha_bar(i / MAX_NOISE_LEVEL), 0.999)
                      for i in range(MAX_NOISE_LEVEL)])
    abar = np.cumprod(1.0 - betas, axis=0)
    return torch.tensor(np.sqrt(abar), dtype=torch.float32), torch.tensor(np.sqrt(1.0 - abar), dtype=torch.float32)


def level_embedding(level: int, dim: int) -> Tensor:
    """The sinusoidal embedding [1, dim] of an integer noise level (cosines, then sines; 10000 max period)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = torch.tensor([level]).float()[:, None] * freqs[None]
    out = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([out, torch.zeros_like(out[:, :1])], dim=-1) if dim % 2 else out


def augment(embed: Tensor, level: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(noised embedding [1, D], level embedding [1, D]) of one embedding [D] at an integer noise level."""
    x = embed.float().cpu().reshape(1, -1)
    noise = torch.randn(x.size(), dtype=x.dtype, generator=generator)
    root, root_rest = _schedule()
    z = root[level] * x + root_rest[level] * noise
    return z, level_embedding(level, x.shape[1])


def _level(amount: float) -> int:
    return round((MAX_NOISE_LEVEL - 1) * float(amount))


def unclip_adm(items: list[dict[str, Any]], seed: int, merge: float) -> Tensor:
    """ComfyUI's ADM vector [1, 2D] of an entry's unCLIP items (see the module docstring)."""
    generator = torch.Generator("cpu")
    parts: list[Tensor] = []
    for item in items:
        for embed in item["clip_vision_output"].image_embeds:
            generator.manual_seed(seed + SEED_OFFSET)  # re-seeded per embedding: each draws the same noise
            z, emb = augment(embed, _level(item["noise_augmentation"]), generator)
            parts.append(torch.cat((z, emb), 1) * item["strength"])
    if len(parts) == 1:
        return parts[0]
    total = torch.stack(parts).sum(0)
    width = total.shape[1] // 2
    z, emb = augment(total[0, :width], _level(merge), generator)  # the generator's stream goes on
    return torch.cat((z, emb), 1)


def _class_input_width(unet: Any) -> int | None:
    config = getattr(unet, "config", None)
    if config is None or getattr(config, "class_embed_type", None) != "projection":
        return None
    return int(config.projection_class_embeddings_input_dim)


def adm_input(model: Any, unet: Any, extras: dict[str, Any], seed: int, batch: int, device: torch.device,
              dtype: torch.dtype) -> Tensor | None:
    """The class-embedding input [batch, ADM] of one entry for an unCLIP UNet, None for other UNets."""
    width = _class_input_width(unet)
    if width is None or getattr(model, "is_sdxl", False):
        return None
    items = extras.get("unclip_conditioning")
    if not items:
        y = torch.zeros((1, width))
    else:
        _check_width(items, width // 2, "the unCLIP UNet's image half of its ADM input")
        y = unclip_adm(items, seed, float(extras.get("unclip_noise_augment_merge", MERGE_DEFAULT)))
    return y.to(device=device, dtype=dtype).expand(batch, -1)


def revision_pooled(extras: dict[str, Any], seed: int, width: int | None) -> Tensor | None:
    """SDXL's pooled embedding from an entry's unCLIP items (ComfyUI's ReVision path), None without any;
    `width` that of the entry's pooled text embedding, when it has one."""
    items = extras.get("unclip_conditioning")
    if not items:
        return None
    if width is not None:
        _check_width(items, int(width), "SDXL's pooled embedding")
    y = unclip_adm(items, seed, 0.0)
    return y[:, :y.shape[1] // 2]


def _check_width(items: list[dict[str, Any]], width: int, what: str) -> None:
    for item in items:
        got = int(item["clip_vision_output"].image_embeds.shape[-1])
        if got != width:
            raise ValueError(f"unCLIPConditioning.clip_vision_output: image embeddings {got} wide, but {what} is "
                             f"{width} wide (use the CLIP vision model this checkpoint was trained with)")


class unCLIPConditioning(Node):
    """Condition an unCLIP model on an image: its CLIP vision embedding, with a strength and noise added to it."""

    category = "conditioning"
    inputs = [Input("conditioning", CONDITIONING), Input("clip_vision_output", CLIP_VISION_OUTPUT),
              Float("strength", 1.0, min=-10.0, max=10.0, step=0.01,
                    tooltip="how strongly the image steers the result (0: not at all)"),
              Float("noise_augmentation", 0.0, min=0.0, max=1.0, step=0.01,
                    tooltip="noise on the image embedding: higher keeps less of the image, more freedom")]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning: list, clip_vision_output: Any, strength: float, noise_augmentation: float) -> tuple:
        if strength == 0:
            return (conditioning,)
        if getattr(clip_vision_output, "image_embeds", None) is None:
            raise ValueError("unCLIPConditioning.clip_vision_output: it holds no image_embeds")
        item = {"clip_vision_output": clip_vision_output, "strength": strength,
                "noise_augmentation": noise_augmentation}
        out = []
        for cond, extras in conditioning:
            extras = dict(extras)
            extras["unclip_conditioning"] = [*extras.get("unclip_conditioning", []), item]
            out.append([cond, extras])
        return (out,)


NODES = [unCLIPConditioning]
