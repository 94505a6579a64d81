"""The parity cases: API-format prompts that sdgraph and the reference ComfyUI both run.

Every case decodes in node "8"; that node's IMAGE output is what is compared. The checkpoint name is filled in
by whoever runs the case (`prompt(case, ckpt_name)`).
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

INPUT_IMAGE = "parity_input.png"
DECODE_NODE = "8"
SAMPLER_NODE = "3"  # its LATENT output is stored too, unscaled as ComfyUI keeps it

_BASE: dict[str, Any] = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": None}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "a red circle on a blue background"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "blurry"}},
    "3": {"class_type": "KSampler", "inputs": {
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0], "seed": 42,
        "steps": 4, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
}


def _case(sampler: str = "euler", scheduler: str = "normal", batch: int = 1, img2img: bool = False) -> dict:
    p = copy.deepcopy(_BASE)
    p["3"]["inputs"].update(sampler_name=sampler, scheduler=scheduler)
    p["5"]["inputs"]["batch_size"] = batch
    if img2img:
        del p["5"]
        p["10"] = {"class_type": "LoadImage", "inputs": {"image": INPUT_IMAGE}}
        p["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
        p["3"]["inputs"].update(latent_image=["11", 0], denoise=0.6)
    return p


CASES: dict[str, dict[str, Any]] = {
    "euler_normal": _case(),
    "euler_ancestral_normal": _case("euler_ancestral"),
    "dpmpp_2m_karras": _case("dpmpp_2m", "karras"),
    "batch2_euler_normal": _case(batch=2),
    "img2img_euler_normal_d06": _case(img2img=True),
}


def prompt(name: str, ckpt_name: str) -> dict[str, Any]:
    p = copy.deepcopy(CASES[name])
    p["4"]["inputs"]["ckpt_name"] = ckpt_name
    return p


def input_image() -> np.ndarray:
    """The img2img source: a 64x64 RGB gradient with a disc, as uint8 (written as PNG by each runner)."""
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    disc = ((x - 24) ** 2 + (y - 30) ** 2 < 15 ** 2).astype(np.float32)
    rgb = np.stack([x * 4 * (1 - disc) + 230 * disc, y * 3, 255 - x * 2], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def png_pixels(image: np.ndarray) -> np.ndarray:
    """The 8-bit pixels a PNG writer that truncates (as ComfyUI's SaveImage does) stores for a float image."""
    return np.clip(image * 255.0, 0, 255).astype(np.uint8)
