"""Model-patch nodes on the UNet's blocks and self-attention: FreeU, FreeU_V2, PatchModelAddDownscale (Kohya's
"deep shrink") and HyperTile. Each clones the MODEL and records ComfyUI-shaped patches (see
`nodes.sd.model_patcher`); the sampler's UNet walk (`nodes.sd.unet_walk`) applies them.

- FreeU / FreeU_V2: before an output block whose incoming features have 4x or 2x the UNet's base channel count,
  the first half of those channels is amplified by b1 / b2 (V2: by an amount following each picture's normalised
  channel-mean map) and the skip's lowest spatial frequencies are scaled by s1 / s2;
- PatchModelAddDownscale: while the step's sigma lies within [start_percent, end_percent] of sampling, the
  features leaving input block `block_number` are shrunk by `downscale_factor` (before or after they are kept as
  that block's skip); an output block whose features and skip differ in size resizes the features to the skip's;
- HyperTile: self-attention at the full latent resolution (and `max_depth` levels below) splits its queries into
  tiles of about `tile_size` pixels, choosing among the `swap_size` largest tilings at random each call.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from sdgraph.node import Boolean, Combo, Float, Input, Int, Node, Output
from sdgraph.nodes.sd.model_objects import DiffusionModel
from sdgraph.nodes.sd.model_sampling import model_sampling_of
from sdgraph.nodes.sd.resize import LATENT_METHODS, resize
from sdgraph.types import MODEL

Tensor = torch.Tensor
Options = dict[str, Any]
SCALE_METHODS = ("bicubic", "nearest-exact", "bilinear", "area", "bislerp")
assert set(SCALE_METHODS) == set(LATENT_METHODS)


def base_channels(model: DiffusionModel) -> int:
    """The UNet's first block width (ComfyUI's model_channels: 320 for SD 1.x / 2.x / XL)."""
    return int(model.slot.module.config.block_out_channels[0])


def call_seed(options: Options) -> int:
    """A seed for a patch's random choice in one attention call: the same for the same step and layer, so a
    workflow samples the same picture on every run (ComfyUI draws from torch's global generator)."""
    sigmas = options.get("sigmas")
    sigma = float(sigmas.reshape(-1)[0]) if isinstance(sigmas, Tensor) and sigmas.numel() else 0.0
    key = (round(sigma, 6), options.get("transformer_index", 0), options.get("block_index", 0))
    return hash(key) & 0x7FFFFFFF


# ---- FreeU --------------------------------------------------------------------------------------------------


def fourier_filter(x: Tensor, threshold: int, scale: float) -> Tensor:
    """x with the spatial frequencies in the 2*threshold square around frequency 0 (after centring the spectrum)
    multiplied by `scale`; computed in float32, returned in x's dtype."""
    try:
        return _fourier_filter(x, threshold, scale)
    except RuntimeError:  # a device without the FFT kernels
        return _fourier_filter(x.cpu(), threshold, scale).to(x.device)


def _fourier_filter(x: Tensor, threshold: int, scale: float) -> Tensor:
    dims = (-2, -1)
    spectrum = torch.fft.fftshift(torch.fft.fftn(x.float(), dim=dims), dim=dims)
    height, width = spectrum.shape[-2:]
    mask = torch.ones((height, width), device=x.device)
    cy, cx = height // 2, width // 2
    mask[cy - threshold:cy + threshold, cx - threshold:cx + threshold] = scale
    filtered = torch.fft.ifftn(torch.fft.ifftshift(spectrum * mask, dim=dims), dim=dims).real
    return filtered.to(x.dtype)


def _normalised_mean(h: Tensor) -> Tensor:
    """Each picture's channel-mean map scaled to 0..1 over its pixels: [B, 1, H, W]. A constant map (1 x 1
    features: small pictures) is 0 here, where ComfyUI divides 0 by 0 and samples NaN."""
    mean = h.mean(1, keepdim=True)
    flat = mean.flatten(1)
    low = flat.min(dim=-1).values[:, None, None, None]
    span = flat.max(dim=-1).values[:, None, None, None] - low
    return torch.where(span > 0, (mean - low) / span, torch.zeros_like(mean))


def freeu_patch(channels: int, b1: float, b2: float, s1: float, s2: float, v2: bool) -> Callable[..., Any]:
    """The output_block_patch of FreeU (v2: the backbone factor follows the normalised mean map)."""
    scales = {channels * 4: (b1, s1), channels * 2: (b2, s2)}

    def output_block_patch(h: Tensor, skip: Tensor, transformer_options: Options) -> tuple[Tensor, Tensor]:
        scale = scales.get(int(h.shape[1]))
        if scale is None:
            return h, skip
        backbone, skip_scale = scale
        half = h.shape[1] // 2
        factor: float | Tensor = (backbone - 1) * _normalised_mean(h) + 1 if v2 else backbone
        h = torch.cat([h[:, :half] * factor, h[:, half:]], dim=1)
        return h, fourier_filter(skip, threshold=1, scale=skip_scale)

    return output_block_patch


def _freeu_inputs(b1: float, b2: float) -> list[Any]:
    return [Input("model", MODEL),
            Float("b1", b1, min=0.0, max=10.0, step=0.01, tooltip="backbone factor of the deepest output stage"),
            Float("b2", b2, min=0.0, max=10.0, step=0.01, tooltip="backbone factor of the next output stage"),
            Float("s1", 0.9, min=0.0, max=10.0, step=0.01, tooltip="skip low-frequency factor, deepest stage"),
            Float("s2", 0.2, min=0.0, max=10.0, step=0.01, tooltip="skip low-frequency factor, next stage")]


class FreeU(Node):
    """Amplify the decoder's backbone features and damp the skips' low frequencies (FreeU)."""

    category = "model_patches/unet"
    inputs = _freeu_inputs(1.1, 1.2)
    outputs = [Output(MODEL)]
    v2 = False

    def run(self, model: DiffusionModel, b1: float, b2: float, s1: float, s2: float) -> tuple:
        patched = model.clone()
        patched.set_model_output_block_patch(freeu_patch(base_channels(model), b1, b2, s1, s2, self.v2))
        return (patched,)


class FreeU_V2(FreeU):
    """FreeU with the backbone amplification weighted by each picture's normalised feature-mean map."""

    inputs = _freeu_inputs(1.3, 1.4)
    v2 = True


# ---- deep shrink ---------------------------------------------------------------------------------------------


def _resized(h: Tensor, width: int, height: int, method: str) -> Tensor:
    return resize(h, width, height, method).to(h.dtype)


def model_sampling(model: DiffusionModel) -> Any:
    """What maps a percent of sampling to a sigma: the MODEL's model sampling (or its object patch)."""
    return model_sampling_of(model)


class PatchModelAddDownscale(Node):
    """Shrink the UNet's features after one input block during the early steps, and grow them back to the skip's
    size in the output blocks (Kohya's "deep shrink": large pictures keep a coherent composition)."""

    display_name = "PatchModelAddDownscale (Kohya Deep Shrink)"
    category = "model_patches/unet"
    inputs = [Input("model", MODEL),
              Int("block_number", 3, min=1, max=32, step=1, tooltip="the input block after which to shrink"),
              Float("downscale_factor", 2.0, min=0.1, max=9.0, step=0.001),
              Float("start_percent", 0.0, min=0.0, max=1.0, step=0.001),
              Float("end_percent", 0.35, min=0.0, max=1.0, step=0.001),
              Boolean("downscale_after_skip", True, tooltip="shrink after the block's skip is kept (else before)"),
              Combo("downscale_method", SCALE_METHODS), Combo("upscale_method", SCALE_METHODS)]
    outputs = [Output(MODEL)]

    def run(self, model: DiffusionModel, block_number: int, downscale_factor: float, start_percent: float,
            end_percent: float, downscale_after_skip: bool, downscale_method: str, upscale_method: str) -> tuple:
        sampling = model_sampling(model)
        sigma_start, sigma_end = sampling.percent_to_sigma(start_percent), sampling.percent_to_sigma(end_percent)
        shrink = 1.0 / downscale_factor

        def input_block_patch(h: Tensor, transformer_options: Options) -> Tensor:
            if transformer_options["block"][1] != block_number:
                return h
            sigma = float(transformer_options["sigmas"][0])
            if not sigma_end <= sigma <= sigma_start:
                return h
            return _resized(h, round(h.shape[-1] * shrink), round(h.shape[-2] * shrink), downscale_method)

        def output_block_patch(h: Tensor, skip: Tensor, transformer_options: Options) -> tuple[Tensor, Tensor]:
            if h.shape[2] != skip.shape[2]:
                h = _resized(h, skip.shape[-1], skip.shape[-2], upscale_method)
            return h, skip

        patched = model.clone()
        if downscale_after_skip:
            patched.set_model_input_block_patch_after_skip(input_block_patch)
        else:
            patched.set_model_input_block_patch(input_block_patch)
        patched.set_model_output_block_patch(output_block_patch)
        return (patched,)


# ---- HyperTile -----------------------------------------------------------------------------------------------


def tile_count(size: int, min_tile: int, options: int, generator: torch.Generator) -> int:
    """How many tiles to cut `size` into: size // d for one of the `options` smallest divisors d >= min_tile
    (ComfyUI draws among all but the last of them)."""
    min_tile = min(min_tile, size)
    counts = [size // d for d in range(min_tile, size + 1) if size % d == 0][:options]
    if len(counts) < 2:
        return counts[0]
    return counts[int(torch.randint(0, len(counts) - 1, (1,), generator=generator))]


class HyperTilePatch:
    """The attn1 patch pair of HyperTile: `tile` splits the queries into (nh x nw) tiles stacked on the batch,
    `untile` puts the attention output back in raster order."""

    def __init__(self, tile_size: int, swap_size: int, max_depth: int, scale_depth: bool) -> None:
        self.latent_tile = max(32, tile_size) // 8
        self.swap_size, self.max_depth, self.scale_depth = swap_size, max_depth, scale_depth
        self.pending: tuple[int, int, int, int] | None = None

    def tile(self, q: Tensor, k: Tensor, v: Tensor, extra_options: Options) -> tuple[Tensor, Tensor, Tensor]:
        shape = extra_options["original_shape"]
        tokens = q.shape[-2]
        levels = [(shape[-2] / 2 ** i) * (shape[-1] / 2 ** i) for i in range(self.max_depth + 1)]
        if tokens not in levels:
            return q, k, v
        aspect = shape[-1] / shape[-2]
        rows, cols = round(math.sqrt(tokens * aspect)), round(math.sqrt(tokens / aspect))
        factor = 2 ** levels.index(tokens) if self.scale_depth else 1
        generator = torch.Generator().manual_seed(call_seed(extra_options))
        nh = tile_count(rows, self.latent_tile * factor, self.swap_size, generator)
        nw = tile_count(cols, self.latent_tile * factor, self.swap_size, generator)
        if nh * nw > 1:
            batch, _, channels = q.shape
            q = (q.reshape(batch, nh, rows // nh, nw, cols // nw, channels).permute(0, 1, 3, 2, 4, 5)
                 .reshape(batch * nh * nw, (rows // nh) * (cols // nw), channels))
            self.pending = (nh, nw, rows, cols)
        return q, k, v

    def untile(self, out: Tensor, extra_options: Options) -> Tensor:
        if self.pending is None:
            return out
        nh, nw, rows, cols = self.pending
        self.pending = None
        channels = out.shape[-1]
        batch = out.shape[0] // (nh * nw)
        return (out.reshape(batch, nh, nw, rows // nh, cols // nw, channels).permute(0, 1, 3, 2, 4, 5)
                .reshape(batch, rows * cols, channels))


class HyperTile(Node):
    """Tile the UNet's high-resolution self-attention (HyperTile): faster on large pictures."""

    category = "model_patches/unet"
    inputs = [Input("model", MODEL), Int("tile_size", 256, min=1, max=2048, tooltip="tile size in pixels"),
              Int("swap_size", 2, min=1, max=128, tooltip="how many tilings to choose among"),
              Int("max_depth", 0, min=0, max=10, tooltip="resolution levels below the full one to tile as well"),
              Boolean("scale_depth", False, tooltip="larger tiles at the deeper levels")]
    outputs = [Output(MODEL)]

    def run(self, model: DiffusionModel, tile_size: int, swap_size: int, max_depth: int,
            scale_depth: bool) -> tuple:
        patch = HyperTilePatch(tile_size, swap_size, max_depth, scale_depth)
        patched = model.clone()
        patched.set_model_attn1_patch(patch.tile)
        patched.set_model_attn1_output_patch(patch.untile)
        return (patched,)


NODES = [FreeU, FreeU_V2, PatchModelAddDownscale, HyperTile]
