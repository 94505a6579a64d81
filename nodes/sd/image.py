"""Image nodes: load images and masks from the input directory, scale, composite, save and preview PNGs; and the
image operations (from `image_ops`) and mask nodes (from `mask_nodes`)."""
from __future__ import annotations

import secrets
from typing import Any

import torch

from sdgraph.limits import Limits, check_memory, current_limits, refusal
from sdgraph.paths import Dirs
from sdgraph.node import Boolean, Combo, Float, Hidden, Input, Int, Node, NodeOutput, Output, String
from sdgraph.nodes.sd.common import MAX_RESOLUTION
from sdgraph.nodes.sd.batching import to_batch
from sdgraph.nodes.sd.image_files import (
    check_image_file, file_sha256, input_images, input_path, missing_input, png_metadata, read_channel, read_image,
    save_pngs, save_webp, webp_metadata,
)
from sdgraph.nodes.sd.compositing import NODES as COMPOSITING
from sdgraph.nodes.sd.image_filters import NODES as IMAGE_FILTERS
from sdgraph.nodes.sd.image_layout import NODES as IMAGE_LAYOUT
from sdgraph.nodes.sd.image_ops import NODES as IMAGE_OPS
from sdgraph.nodes.sd.mask_nodes import NODES as MASK_NODES
from sdgraph.nodes.sd.output_images import NODES as OUTPUT_IMAGES
from sdgraph.nodes.sd.rebatch import NODES_IMAGE as REBATCH_IMAGES
from sdgraph.nodes.sd.resize import CROPS, IMAGE_METHODS, resize
from sdgraph.nodes.sd.upscale_model import NODES as UPSCALE_MODEL_NODES
from sdgraph.types import IMAGE, MASK


class LoadImage(Node):
    """An image from the input directory, with a mask from its alpha channel (transparent = 1)."""

    category = "image"
    inputs = [Combo("image", input_images, image_upload=True)]
    outputs = [Output(IMAGE), Output(MASK)]
    self_checked = ("image",)  # names in subfolders and `[output]`-annotated ones are valid beyond the list

    def run(self, image: str) -> tuple:
        return read_image(input_path(self.ctx.dirs, image), self.ctx.limits)

    @classmethod
    def fingerprint(cls, dirs: Dirs, image: str = "", **_: Any) -> str:
        return file_sha256(input_path(dirs, image))

    @classmethod
    def validate_inputs(cls, dirs: Dirs, image: str = "", **_: Any) -> str | None:
        return loadable(dirs, image, "LoadImage.image", all_frames=True)


class LoadImageMask(Node):
    """A mask from one channel of an image in the input directory."""

    category = "mask"
    inputs = [Combo("image", input_images, image_upload=True), Combo("channel", ("alpha", "red", "green", "blue"))]
    outputs = [Output(MASK)]
    self_checked = ("image",)

    def run(self, image: str, channel: str) -> tuple:
        return (read_channel(input_path(self.ctx.dirs, image), channel, self.ctx.limits),)

    @classmethod
    def fingerprint(cls, dirs: Dirs, image: str = "", **_: Any) -> str:
        return file_sha256(input_path(dirs, image))

    @classmethod
    def validate_inputs(cls, dirs: Dirs, image: str = "", **_: Any) -> str | None:
        return loadable(dirs, image, "LoadImageMask.image", all_frames=False)


def loadable(dirs: Dirs, image: str, where: str, all_frames: bool) -> str | None:
    """Why an image name cannot be loaded within the budget (from the file's header), None when it can."""
    problem = missing_input(dirs, image)
    if problem is not None:
        return problem
    path = input_path(dirs, image)
    try:
        return refusal(lambda: check_image_file(current_limits(), where, path, all_frames))
    except OSError as exc:  # not an image Pillow can read
        return f"{where}: {image!r} is not a readable image: {exc}"


def _scale(image: torch.Tensor, width: int, height: int, method: str, crop: str, limits: Limits,
           where: str) -> torch.Tensor:
    """Images resized to width x height, refused before resizing when the result is over the budget."""
    check_memory(limits, where, "the scaled images", (image.shape[0], height, width, image.shape[-1]))
    return resize(image.movedim(-1, 1), width, height, method, crop).clamp(0, 1).movedim(1, -1)


class ImageScale(Node):
    """Resize images to a size (0 keeps the aspect ratio from the other side)."""

    category = "image/upscaling"
    inputs = [Input("image", IMAGE), Combo("upscale_method", IMAGE_METHODS),
              Int("width", 512, min=0, max=MAX_RESOLUTION, step=1),
              Int("height", 512, min=0, max=MAX_RESOLUTION, step=1), Combo("crop", CROPS)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str) -> tuple:
        if width == 0 and height == 0:
            return (image,)
        h, w = image.shape[1:3]
        width = width or max(1, round(w * height / h))
        height = height or max(1, round(h * width / w))
        return (_scale(image, width, height, upscale_method, crop, self.ctx.limits, "ImageScale.width"),)


class ImageScaleBy(Node):
    """Resize images by a factor."""

    category = "image/upscaling"
    inputs = [Input("image", IMAGE), Combo("upscale_method", IMAGE_METHODS),
              Float("scale_by", 1.0, min=0.01, max=8.0, step=0.01)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple:
        h, w = image.shape[1:3]
        return (_scale(image, round(w * scale_by), round(h * scale_by), upscale_method, "disabled",
                       self.ctx.limits, "ImageScaleBy.scale_by"),)


def composite(destination: torch.Tensor, source: torch.Tensor, x: int, y: int, mask: torch.Tensor | None
              ) -> torch.Tensor:
    """``source`` pasted onto ``destination`` with its top-left corner at (x, y), clipped to the destination;
    ``mask`` (1 = source, 0 = destination; resized to the source) blends the two."""
    batch, height, width = destination.shape[:3]
    source = to_batch(source, batch)
    if mask is None:
        mask = torch.ones(source.shape[:3])
    mask = mask.reshape(-1, *mask.shape[-2:]).to(source)
    if mask.shape[-2:] != source.shape[1:3]:
        mask = torch.nn.functional.interpolate(mask[:, None], size=source.shape[1:3], mode="bilinear")[:, 0]
    mask = to_batch(mask, batch)[..., None]
    h, w = min(source.shape[1], height - y), min(source.shape[2], width - x)
    out = destination.clone()
    if h > 0 and w > 0:
        region = out[:, y:y + h, x:x + w]
        out[:, y:y + h, x:x + w] = mask[:, :h, :w] * source[:, :h, :w] + (1 - mask[:, :h, :w]) * region
    return out


class ImageCompositeMasked(Node):
    """Paste an image onto another at (x, y); with a mask, only where the mask is set (inpainting's paste-back)."""

    category = "image"
    inputs = [Input("destination", IMAGE), Input("source", IMAGE),
              Int("x", 0, min=0, max=MAX_RESOLUTION, step=1), Int("y", 0, min=0, max=MAX_RESOLUTION, step=1),
              Boolean("resize_source", False), Input("mask", MASK, optional=True)]
    outputs = [Output(IMAGE)]

    def run(self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, resize_source: bool,
            mask: torch.Tensor | None = None) -> tuple:
        if source.shape[-1] != destination.shape[-1]:
            raise ValueError(f"source has {source.shape[-1]} channels, destination {destination.shape[-1]}")
        if resize_source:
            source = _scale(source, destination.shape[2], destination.shape[1], "bilinear", "disabled",
                            self.ctx.limits, "ImageCompositeMasked.resize_source")
        return (composite(destination, source, x, y, mask),)


class SaveImage(Node):
    """Save images as PNG in the output directory (never overwriting), with the workflow embedded."""

    category = "image"
    output_node = True
    inputs = [Input("images", IMAGE), String("filename_prefix", "ComfyUI"),
              Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")]
    outputs = []

    def run(self, images: torch.Tensor, filename_prefix: str = "ComfyUI", prompt: Any = None,
            extra_pnginfo: Any = None) -> NodeOutput:
        records = save_pngs(images, self.ctx.dirs.output, filename_prefix, "output",
                            png_metadata(prompt, extra_pnginfo))
        return NodeOutput(ui={"images": records})


class PreviewImage(Node):
    """Show images without keeping them: PNGs in the temp directory."""

    category = "image"
    output_node = True
    inputs = [Input("images", IMAGE), Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")]
    outputs = []

    def run(self, images: torch.Tensor, prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        prefix = "sdgraph_temp_" + secrets.token_hex(3)
        records = save_pngs(images, self.ctx.dirs.temp, prefix, "temp", png_metadata(prompt, extra_pnginfo),
                            compress_level=1)
        return NodeOutput(ui={"images": records})


# How hard the WebP encoder works, by the names ComfyUI's node offers (libwebp's methods 0-6).
WEBP_METHODS = {"default": 4, "fastest": 0, "slowest": 6}


class SaveAnimatedWEBP(Node):
    """Save the batch as one (animated) WebP in the output directory, with the workflow in its EXIF."""

    category = "image/animation"
    output_node = True
    inputs = [Input("images", IMAGE), String("filename_prefix", "ComfyUI"),
              Float("fps", 6.0, min=0.01, max=1000.0, step=0.01), Boolean("lossless", True),
              Int("quality", 80, min=0, max=100), Combo("method", list(WEBP_METHODS)),
              Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")]
    outputs = []

    def run(self, images: torch.Tensor, filename_prefix: str, fps: float, lossless: bool, quality: int,
            method: str, prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        records = save_webp(images, self.ctx.dirs.output, filename_prefix, "output",
                            webp_metadata(prompt, extra_pnginfo), fps=fps, lossless=lossless, quality=quality,
                            method=WEBP_METHODS[method])
        return NodeOutput(ui={"images": records, "animated": [len(images) > 1]})


NODES = [LoadImage, LoadImageMask, ImageScale, ImageScaleBy, ImageCompositeMasked, SaveImage, PreviewImage,
         SaveAnimatedWEBP, *IMAGE_OPS, *MASK_NODES, *IMAGE_LAYOUT, *IMAGE_FILTERS, *COMPOSITING, *OUTPUT_IMAGES,
         *REBATCH_IMAGES, *UPSCALE_MODEL_NODES]
