"""Resizing of [B, C, H, W] tensors by the methods node users pick by name, with optional centre crop."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from sdgraph.nodes.sd.bislerp import bislerp

LATENT_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "bislerp")
IMAGE_METHODS = ("nearest-exact", "bilinear", "area", "bicubic", "lanczos")
CROPS = ("disabled", "center")


def center_crop(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop [..., H, W] towards the aspect ratio of width:height, trimming the same number of rows (or columns)
    from both sides, that number rounded half to even, as ComfyUI's common_upscale does (so an odd excess keeps
    one more or one fewer than the exact aspect)."""
    h, w = x.shape[-2:]
    src, dst = w / h, width / height
    if src > dst:
        cut = round((w - w * (dst / src)) / 2)
        return x[..., :, cut:w - cut]
    if src < dst:
        cut = round((h - h * (src / dst)) / 2)
        return x[..., cut:h - cut, :]
    return x


def resize(x: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled") -> torch.Tensor:
    if crop == "center":
        x = center_crop(x, width, height)
    if method == "lanczos":
        return _lanczos(x, width, height)
    if method == "bislerp":
        return bislerp(x.float(), width, height)
    mode = {"nearest-exact": "nearest-exact", "bilinear": "bilinear", "area": "area", "bicubic": "bicubic"}[method]
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(x.float(), size=(height, width), mode=mode, **kwargs)


def _lanczos(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    out = []
    for item in x.float().clamp(0, 1):
        arr = (item.movedim(0, -1).cpu().numpy() * 255.0).astype(np.uint8)  # truncated, as ComfyUI does
        img = Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr)
        img = img.resize((width, height), Image.Resampling.LANCZOS)
        t = torch.from_numpy(np.asarray(img).astype(np.float32) / 255.0)
        out.append((t[..., None] if t.dim() == 2 else t).movedim(-1, 0))
    return torch.stack(out)
