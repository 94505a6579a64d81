"""`comfy.k_diffusion.utils` for plugins: the small helpers of k-diffusion that packs import."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image


def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """x with singleton dimensions appended until it has target_dims."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"append_dims: input has {x.ndim} dims but target_dims is {target_dims}")
    return x[(...,) + (None,) * missing]


class FolderOfImages(torch.utils.data.Dataset):
    """The image files under a folder (recursively, sorted by path), each read as an RGB PIL image."""

    IMG_EXTENSIONS = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}

    def __init__(self, root: str | Path, transform: Any = None) -> None:
        super().__init__()
        self.root = Path(root)
        self.transform = transform if transform is not None else (lambda image: image)
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in self.IMG_EXTENSIONS)

    def __repr__(self) -> str:
        return f'FolderOfImages(root="{self.root}", len: {len(self)})'

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int) -> tuple[Any]:
        with open(self.paths[key], "rb") as f:
            image = Image.open(f).convert("RGB")
        return (self.transform(image),)
