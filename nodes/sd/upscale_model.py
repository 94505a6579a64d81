"""Upscale models (ESRGAN, Real-ESRGAN, Compact: see `upscale_arch`): UpscaleModelLoader and ImageUpscaleWithModel.

UPSCALE_MODEL -> `UpscaleModel`: the network under the model manager (fp32, as ComfyUI runs it), its `scale`,
`input_channels` / `output_channels`, and `__call__(images [B,C,H,W] 0..1 on its device)`, which pads to the
network's size requirements, runs it, clamps to 0..1 and crops the padding off, as spandrel's descriptors do.

ImageUpscaleWithModel works as ComfyUI's: tiles of 512 pixels overlapping by 32, blended (`tiling`), and on
running out of device memory it starts again with tiles half as large, down to 128.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F

from sdgraph.limits import check_memory
from sdgraph.node import Combo, Input, Node, Output, models_in
from sdgraph.nodes.sd.common import manager_of, model_path
from sdgraph.nodes.sd.tiling import tile_count, tiled_scale
from sdgraph.nodes.sd.upscale_arch import Built, UnsupportedUpscaleModel, build, canonical
from sdgraph.types import IMAGE

if TYPE_CHECKING:
    from sdgraph.models import ManagedModule, ModelManager

UPSCALE_MODEL = "UPSCALE_MODEL"
TILE, OVERLAP, SMALLEST_TILE = 512, 32, 128


@dataclass
class UpscaleModel:
    slot: "ManagedModule"
    architecture: str
    scale: int
    input_channels: int
    output_channels: int
    minimum: int = 0
    size_multiple: int = 1
    name: str = ""

    @property
    def model(self) -> torch.nn.Module:
        return self.slot.module

    def cache_nbytes(self) -> int:
        return 0  # the module belongs to the model manager

    def placed(self, manager: "ModelManager | None" = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network on its compute device, as a function of CPU images [B,C,H,W] -> float32 device images."""
        manager = manager or self.slot.manager
        module = manager.acquire(self.slot)
        device, dtype = manager.compute_device, manager.dtype_for(self.slot)
        return lambda images: self._run(module, images.to(device=device, dtype=dtype)).float()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(self.model, images)

    def _run(self, module: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        out = module(_pad(images, self.minimum, self.size_multiple)).clamp_(0, 1)
        return out[..., :height * self.scale, :width * self.scale]


def _pad(images: torch.Tensor, minimum: int, multiple: int) -> torch.Tensor:
    """Padded at the bottom and right to the size requirements: mirrored as far as the image allows, then the
    border repeated (spandrel's way)."""
    height, width = images.shape[-2:]
    want_h = -(-max(minimum, height) // multiple) * multiple
    want_w = -(-max(minimum, width) // multiple) * multiple
    pad_h, pad_w = want_h - height, want_w - width
    if not pad_h and not pad_w:
        return images
    mirror_h, mirror_w = min(pad_h, height - 1), min(pad_w, width - 1)
    images = F.pad(images, (0, mirror_w, 0, mirror_h), mode="reflect")
    return F.pad(images, (0, pad_w - mirror_w, 0, pad_h - mirror_h), mode="replicate")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file or a .pth/.pt/.ckpt/.bin (read with `weights_only`: no code runs)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return canonical(load_file(str(path)))
    data = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: holds a {type(data).__name__}, not a dict of tensors")
    return canonical(data)


def load_upscale_model(path: Path, manager: "ModelManager") -> UpscaleModel:
    """Read and build the file's network (once per file: the manager caches it while the file is unchanged)."""
    def loader(file: Path) -> UpscaleModel:
        try:
            built: Built = build(read_state_dict(file))
        except UnsupportedUpscaleModel as exc:
            raise ValueError(f"UpscaleModelLoader.model_name: {file.name}: {exc}") from None
        slot = manager.manage(built.module, f"{file.name}:upscale_model", "upscale_model")
        return UpscaleModel(slot, built.architecture, built.scale, built.input_channels, built.output_channels,
                            built.minimum, built.size_multiple, name=file.name)
    return manager.load(path, "upscale_model", loader)


def upscale(model: UpscaleModel, images: torch.Tensor, run: Callable[[torch.Tensor], torch.Tensor],
            on_tile: Callable[[int, int], None] | None = None, tile: int = TILE) -> torch.Tensor:
    """IMAGE [B,H,W,C] upscaled by the model in blended tiles; a tile size that runs out of device memory is
    halved and the whole image started again, until tiles would be smaller than 128 pixels."""
    x = images.movedim(-1, 1)
    while True:
        total = x.shape[0] * tile_count(x.shape[2], x.shape[3], tile, tile, OVERLAP)
        done = [0]

        def tick() -> None:
            done[0] += 1
            if on_tile is not None:
                on_tile(done[0], total)
        try:
            out = tiled_scale(x, run, (tile, tile), OVERLAP, model.scale, model.output_channels, tick)
            return out.clamp(0, 1).movedim(1, -1)
        except torch.OutOfMemoryError:
            tile //= 2
            if tile < SMALLEST_TILE:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


class UpscaleModelLoader(Node):
    """Load an upscale model (ESRGAN, Real-ESRGAN, Compact) from models/upscale_models."""

    display_name = "Load Upscale Model"
    category = "loaders"
    inputs = [Combo("model_name", models_in("upscale_models"))]
    outputs = [Output(UPSCALE_MODEL)]

    def run(self, model_name: str) -> tuple:
        return (load_upscale_model(model_path(self.ctx, "upscale_models", model_name), manager_of(self.ctx)),)


class ImageUpscaleWithModel(Node):
    """Upscale images with an upscale model, in blended tiles of 512 pixels (smaller when memory runs short)."""

    display_name = "Upscale Image (using Model)"
    category = "image/upscaling"
    inputs = [Input("upscale_model", UPSCALE_MODEL), Input("image", IMAGE)]
    outputs = [Output(IMAGE)]

    def run(self, upscale_model: UpscaleModel, image: torch.Tensor) -> tuple:
        batch, height, width, channels = image.shape
        if channels != upscale_model.input_channels:
            raise ValueError(f"ImageUpscaleWithModel.image: {channels} channels, but {upscale_model.name} takes "
                             f"{upscale_model.input_channels}")
        scale = upscale_model.scale
        check_memory(self.ctx.limits, "ImageUpscaleWithModel.image", "the upscaled images",
                     (batch, height * scale, width * scale, upscale_model.output_channels))
        run = upscale_model.placed(manager_of(self.ctx))
        return (upscale(upscale_model, image, run, lambda done, total: self.ctx.progress(done, total)),)


NODES = [UpscaleModelLoader, ImageUpscaleWithModel]
