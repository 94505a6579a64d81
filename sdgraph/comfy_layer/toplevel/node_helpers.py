"""ComfyUI's `node_helpers` for plugins: conditioning updates, tolerant Pillow calls, the file hasher."""
from __future__ import annotations

import hashlib
from typing import Any, Callable

import torch
from PIL import ImageFile, UnidentifiedImageError

from comfy.cli_args import args


def conditioning_set_values(conditioning: list, values: dict[str, Any] | None = None, append: bool = False) -> list:
    """A new CONDITIONING whose entries' extras (copied) get `values`; with append, a value already there is
    added to (old + new: lists concatenate) instead of replaced."""
    out = []
    for cond, extras in conditioning:
        extras = dict(extras)
        for key, value in (values or {}).items():
            if append and extras.get(key) is not None:
                value = extras[key] + value
            extras[key] = value
        out.append([cond, extras])
    return out


def pillow(fn: Callable[[Any], Any], arg: Any) -> Any:
    """fn(arg), retried once with truncated images allowed when Pillow refuses a damaged file."""
    try:
        return fn(arg)
    except (OSError, UnidentifiedImageError, ValueError):
        previous = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            return fn(arg)
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous


_HASHES = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


def hasher() -> Callable[..., Any]:
    """The hash constructor of --default-hashing-function (sha256 by default)."""
    return _HASHES[args.default_hashing_function]


def string_to_torch_dtype(string: str) -> torch.dtype | None:
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(string)


def image_alpha_fix(destination: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Match channel counts for compositing: drop source's alpha, or give destination an opaque one."""
    if destination.shape[-1] < source.shape[-1]:
        source = source[..., :destination.shape[-1]]
    elif destination.shape[-1] > source.shape[-1]:
        destination = torch.nn.functional.pad(destination, (0, 1))
        destination[..., -1] = 1.0
    return destination, source
