"""The utility-node parity cases: node inputs that sdgraph and the reference ComfyUI both evaluate
(tools/comfy_reference/make_utility_references.py writes ComfyUI's answers to tests/sd/data/utility_references.npz;
tests/sd/test_utility_parity.py compares sdgraph's).

A case is (class_type, inputs); inputs are built here from seeded generators, so both sides see the same tensors.
Outputs are flattened into named arrays (`flatten`): tensors as they are, lists and dicts by index and key, the
seed indices of latents as integer arrays, and a saved file as its bytes.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

Case = tuple[str, dict[str, Any]]
PROMPT = {"1": {"class_type": "SaveAnimatedPNG", "inputs": {"filename_prefix": "parity"}}}
EXTRA_PNGINFO = {"workflow": {"nodes": [], "links": [], "version": 0.4}}
OUTPUT_PICTURE = "parity_rgba.png"  # written into the output folder by `write_output_picture`


def _rand(seed: int, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _smooth(seed: int, batch: int, height: int, width: int, channels: int = 3) -> torch.Tensor:
    """A picture with soft shapes (random values blurred up from a coarse grid), so edges and palettes matter."""
    coarse = _rand(seed, batch, channels, max(2, height // 4), max(2, width // 4))
    fine = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return fine.movedim(1, -1).contiguous()


def _shapes(seed: int) -> torch.Tensor:
    """Bright rectangles on a dark, noisy ground: Canny's and Morphology's kind of picture."""
    picture = _rand(seed, 1, 24, 32, 3) * 0.1
    picture[:, 4:14, 5:15] += 0.8
    picture[:, 10:20, 18:28, 1] += 0.6
    picture[:, 17:19, 3:9] = 1.0
    return picture.clamp(0, 1)


def _latent(seed: int, batch: int, side: int, **extra: Any) -> dict[str, Any]:
    return {"samples": torch.randn(batch, 4, side, side, generator=torch.Generator().manual_seed(seed)), **extra}


def _stitch_cases() -> dict[str, Case]:
    a, b = _smooth(1, 2, 12, 16), _smooth(2, 3, 9, 7)
    rgba = torch.cat([_smooth(3, 1, 10, 10), _rand(4, 1, 10, 10, 1)], dim=-1)
    out: dict[str, Case] = {}
    for direction in ("right", "down", "left", "up"):
        for match in (True, False):
            out[f"stitch_{direction}_{'match' if match else 'pad'}"] = ("ImageStitch", {
                "image1": a, "image2": b, "direction": direction, "match_image_size": match, "spacing_width": 4,
                "spacing_color": {"right": "white", "down": "red", "left": "black", "up": "green"}[direction]})
    out["stitch_rgba_blue"] = ("ImageStitch", {"image1": rgba, "image2": b, "direction": "right",
                                               "match_image_size": False, "spacing_width": 2,
                                               "spacing_color": "blue"})
    return out


def _size_cases() -> dict[str, Case]:
    wide, tall = _smooth(5, 2, 10, 17), _smooth(6, 1, 19, 8)
    out: dict[str, Case] = {}
    for method in ("area", "bicubic", "nearest-exact", "bilinear", "lanczos"):
        out[f"pad_{method}"] = ("ResizeAndPadImage", {"image": wide, "target_width": 23, "target_height": 20,
                                                      "padding_color": "black" if method == "area" else "white",
                                                      "interpolation": method})
        out[f"max_dimension_{method}"] = ("ImageScaleToMaxDimension", {"image": tall if method == "lanczos" else wide,
                                                                       "upscale_method": method, "largest_size": 25})
    return out


def _filter_cases() -> dict[str, Case]:
    picture, shapes = _smooth(7, 2, 20, 24), _shapes(8)
    out: dict[str, Case] = {}
    for dither in ("none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"):
        out[f"quantize_{dither}"] = ("ImageQuantize", {"image": picture, "colors": 6, "dither": dither})
    out["quantize_256"] = ("ImageQuantize", {"image": picture, "colors": 256, "dither": "none"})
    for operation in ("erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat"):
        for size in (3, 4, 9):
            out[f"morphology_{operation}_{size}"] = ("Morphology", {"image": shapes, "operation": operation,
                                                                    "kernel_size": size})
    out["canny_shapes"] = ("Canny", {"image": shapes, "low_threshold": 0.4, "high_threshold": 0.8})
    out["canny_soft"] = ("Canny", {"image": picture, "low_threshold": 0.05, "high_threshold": 0.15})
    out["noise"] = ("ImageAddNoise", {"image": picture, "seed": 1234, "strength": 0.3})
    out["noise_top_seed"] = ("ImageAddNoise", {"image": picture, "seed": 2 ** 64 - 1, "strength": 0.8})
    return out


PORTER_DUFF_MODES = ("ADD", "CLEAR", "DARKEN", "DST", "DST_ATOP", "DST_IN", "DST_OUT", "DST_OVER", "LIGHTEN",
                     "MULTIPLY", "OVERLAY", "SCREEN", "SRC", "SRC_ATOP", "SRC_IN", "SRC_OUT", "SRC_OVER", "XOR")


def _composite_cases() -> dict[str, Case]:
    inputs = {"source": _smooth(9, 2, 10, 14), "source_alpha": _rand(10, 2, 7, 7),
              "destination": _smooth(11, 3, 12, 12), "destination_alpha": _rand(12, 3, 6, 9)}
    return {f"porter_duff_{mode}": ("PorterDuffImageComposite", {**inputs, "mode": mode})
            for mode in PORTER_DUFF_MODES}


def _batch_cases() -> dict[str, Case]:
    masked = _latent(13, 2, 4, noise_mask=_rand(14, 2, 1, 32, 32), batch_index=[5, 8])
    latents = [_latent(15, 3, 4), masked, _latent(16, 2, 6), _latent(17, 1, 6, noise_mask=_rand(18, 1, 1, 48, 48))]
    images = [_smooth(19, 3, 6, 6), _smooth(20, 1, 6, 6), _smooth(21, 2, 6, 6)]
    return {
        "rebatch_latents_2": ("RebatchLatents", {"latents": latents, "batch_size": [2]}),
        "rebatch_latents_4": ("RebatchLatents", {"latents": latents, "batch_size": [4]}),
        "rebatch_images_4": ("RebatchImages", {"images": images, "batch_size": [4]}),
        "seed_fixed": ("LatentBatchSeedBehavior", {"samples": masked, "seed_behavior": "fixed"}),
        "seed_fixed_plain": ("LatentBatchSeedBehavior", {"samples": _latent(22, 3, 4), "seed_behavior": "fixed"}),
        "seed_random": ("LatentBatchSeedBehavior", {"samples": masked, "seed_behavior": "random"}),
    }


def _file_cases() -> dict[str, Case]:
    return {
        "animated_png": ("SaveAnimatedPNG", {"images": _smooth(23, 3, 8, 10), "filename_prefix": "parity",
                                             "fps": 7.0, "compress_level": 6, "prompt": PROMPT,
                                             "extra_pnginfo": EXTRA_PNGINFO}),
        "mask_preview": ("MaskPreview", {"mask": _rand(24, 2, 5, 7), "prompt": PROMPT,
                                         "extra_pnginfo": EXTRA_PNGINFO}),
        "load_image_output": ("LoadImageOutput", {"image": f"{OUTPUT_PICTURE} [output]"}),
    }


BUILDERS: tuple[Callable[[], dict[str, Case]], ...] = (_stitch_cases, _size_cases, _filter_cases, _composite_cases,
                                                        _batch_cases, _file_cases)


def cases() -> dict[str, Case]:
    out: dict[str, Case] = {}
    for build in BUILDERS:
        out.update(build())
    return out


def write_output_picture(folder) -> None:
    """An RGBA picture with a soft alpha, for LoadImageOutput."""
    from PIL import Image

    pixels = (_smooth(25, 1, 9, 11, channels=4)[0].numpy() * 255).astype(np.uint8)
    Image.fromarray(pixels, "RGBA").save(folder / OUTPUT_PICTURE)


def flatten(value: Any, prefix: str) -> dict[str, np.ndarray]:
    """Named arrays of a node's outputs (see the module docstring)."""
    if isinstance(value, torch.Tensor):
        return {prefix: value.detach().float().cpu().numpy()}
    if isinstance(value, (bytes, bytearray)):
        return {prefix: np.frombuffer(bytes(value), dtype=np.uint8)}
    if isinstance(value, dict):
        out: dict[str, np.ndarray] = {}
        for key in sorted(value):
            out.update(flatten(value[key], f"{prefix}.{key}"))
        return out
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, int) for v in value):
            return {prefix: np.asarray(value, dtype=np.int64)}
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}.{index}"))
        return out
    raise TypeError(f"{prefix}: cannot flatten a {type(value).__name__}")
