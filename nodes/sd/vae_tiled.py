"""VAEDecodeTiled and VAEEncodeTiled: the VAE run in overlapping tiles, so large images fit in device memory.

Tiles are given in pixels; the decoder's are converted to latent pixels (tile_size // 8, overlap // 8) after the
overlap is capped at a quarter of the tile, as ComfyUI does. `temporal_size` / `temporal_overlap` are ComfyUI's
inputs for video VAEs (frames per tile); the SD-family VAEs are image VAEs, so they are accepted and do nothing.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from sdgraph.context import NodeContext
from sdgraph.limits import check_memory
from sdgraph.node import Input, Int, Node, Output
from sdgraph.nodes.sd.model_objects import VaeModel
from sdgraph.nodes.sd.tiling import passes_tile_count, pass_shapes
from sdgraph.types import IMAGE, LATENT, VAE

TEMPORAL = [Int("temporal_size", 64, min=8, max=4096, step=4, tooltip="only for video VAEs (unused here)"),
            Int("temporal_overlap", 8, min=4, max=4096, step=4, tooltip="only for video VAEs (unused here)")]


def _progress(ctx: NodeContext, total: int) -> Callable[[], None]:
    done = [0]

    def tick() -> None:
        done[0] += 1
        ctx.progress(done[0], total)
    return tick


class VAEDecodeTiled(Node):
    """Latents to images, decoded in overlapping tiles whose seams are blended away."""

    display_name = "VAE Decode (Tiled)"
    category = "_for_testing"
    inputs = [Input("samples", LATENT), Input("vae", VAE),
              Int("tile_size", 512, min=64, max=4096, step=32), Int("overlap", 64, min=0, max=4096, step=32),
              *TEMPORAL]
    outputs = [Output(IMAGE)]

    def run(self, samples: dict[str, Any], vae: VaeModel, tile_size: int, overlap: int, temporal_size: int = 64,
            temporal_overlap: int = 8) -> tuple:
        latent = samples["samples"]
        batch, _, h, w = latent.shape
        ratio = vae.spacial_compression_decode()
        check_memory(self.ctx.limits, "VAEDecodeTiled.samples", "the decoded images", (batch, h * ratio, w * ratio, 3))
        overlap = min(overlap, tile_size // 4)
        tile, overlap = tile_size // ratio, overlap // ratio
        total = passes_tile_count(h, w, pass_shapes(tile, tile, "decode"), overlap, batch)
        return (vae.decode_tiled(latent, tile, tile, overlap, on_tile=_progress(self.ctx, total)),)


class VAEEncodeTiled(Node):
    """Images to latents, encoded in overlapping tiles whose seams are blended away."""

    display_name = "VAE Encode (Tiled)"
    category = "_for_testing"
    inputs = [Input("pixels", IMAGE), Input("vae", VAE),
              Int("tile_size", 512, min=64, max=4096, step=64), Int("overlap", 64, min=0, max=4096, step=32),
              *TEMPORAL]
    outputs = [Output(LATENT)]

    def run(self, pixels: torch.Tensor, vae: VaeModel, tile_size: int, overlap: int, temporal_size: int = 64,
            temporal_overlap: int = 8) -> tuple:
        ratio = vae.spacial_compression_encode()
        batch, h, w = pixels.shape[0], pixels.shape[1] // ratio * ratio, pixels.shape[2] // ratio * ratio
        total = passes_tile_count(h, w, pass_shapes(tile_size, tile_size, "encode"), overlap, batch)
        try:
            latent = vae.encode_tiled(pixels, tile_size, tile_size, overlap, on_tile=_progress(self.ctx, total))
        except ValueError as exc:  # a tile pass whose tile is not larger than the overlap
            raise ValueError(f"VAEEncodeTiled.overlap: {exc}; choose an overlap below half the tile size") from None
        return ({"samples": latent},)


NODES = [VAEDecodeTiled, VAEEncodeTiled]
