"""Image operations on IMAGE tensors [B, H, W, C]: invert; batches (join, take a part, repeat); pad for outpainting
(with its mask); crop, flip, rotate; solid images; sizes; blend, blur, sharpen; scale to a pixel count."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from sdgraph.limits import check_memory, current_limits, refusal
from sdgraph.node import Float, Hidden, Input, Int, Node, Output
from sdgraph.nodes.sd.latent_ops import FLIPS, ROTATIONS, fit_to, quarter_turns
from sdgraph.nodes.sd.mask_nodes import MAX_RESOLUTION, choice
from sdgraph.nodes.sd.resize import IMAGE_METHODS, resize
from sdgraph.paths import Dirs
from sdgraph.types import IMAGE, INT, MASK

BLEND_MODES = ("normal", "multiply", "screen", "overlay", "soft_light", "difference")


def _fit_image(image: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """[B, H, W, C] resized to height x width after a centre crop to that aspect ratio (ComfyUI's crop)."""
    return fit_to(image.movedim(-1, 1), height, width, mode).movedim(1, -1)


class ImageInvert(Node):
    """One minus each channel."""

    category = "image"
    inputs = [Input("image", IMAGE)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor) -> tuple:
        return (1.0 - image,)


class ImageBatch(Node):
    """One batch: image1's images, then image2's (resized, bilinear with a centre crop, to image1's size)."""

    category = "image"
    inputs = [Input("image1", IMAGE), Input("image2", IMAGE)]
    outputs = [Output(IMAGE)]

    def run(self, image1: torch.Tensor, image2: torch.Tensor) -> tuple:
        if image1.shape[-1] != image2.shape[-1]:
            raise ValueError(f"ImageBatch.image2: {image2.shape[-1]} channels, image1 has {image1.shape[-1]}")
        if image1.shape[1:] != image2.shape[1:]:
            image2 = _fit_image(image2, image1.shape[1], image1.shape[2], "bilinear")
        return (torch.cat([image1, image2.to(image1)]),)


class ImageFromBatch(Node):
    """`length` images of a batch from `batch_index` on (both cut to the batch)."""

    category = "image/batch"
    inputs = [Input("image", IMAGE), Int("batch_index", 0, min=0, max=4095, step=None),
              Int("length", 1, min=1, max=4096, step=None)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, batch_index: int, length: int) -> tuple:
        start = min(image.shape[0] - 1, batch_index)
        return (image[start:start + min(image.shape[0] - start, length)].clone(),)


class RepeatImageBatch(Node):
    """The batch repeated `amount` times."""

    category = "image/batch"
    inputs = [Input("image", IMAGE), Int("amount", 1, min=1, max=4096, step=None)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, amount: int) -> tuple:
        check_memory(self.ctx.limits, "RepeatImageBatch.amount", "the repeated images",
                     (image.shape[0] * amount, *image.shape[1:]))
        return (image.repeat(amount, 1, 1, 1),)


def outpaint_mask(height: int, width: int, left: int, top: int, right: int, bottom: int, feathering: int
                  ) -> torch.Tensor:
    """The [H + top + bottom, W + left + right] mask of ImagePadForOutpaint: 1 on the padding; inside, 0, or with
    feathering ((f - d) / f)^2 where d, the distance to the nearest padded side, is below f. ComfyUI counts the
    distance to the top and left sides from 0 and to the bottom and right ones from 1, and only feathers when
    2 f is less than both sides of the image."""
    mask = torch.ones(height + top + bottom, width + left + right, dtype=torch.float32)
    inner = torch.zeros(height, width, dtype=torch.float64)
    if 0 < feathering and feathering * 2 < height and feathering * 2 < width:
        i = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width)
        j = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width)
        far_h, far_w = torch.full_like(i, height), torch.full_like(j, width)
        d = torch.stack([i if top else far_h, height - i if bottom else far_h,
                         j if left else far_w, width - j if right else far_w]).amin(0)
        inner = torch.where(d < feathering, ((feathering - d) / feathering) ** 2, inner)
    mask[top:top + height, left:left + width] = inner.float()
    return mask[None]


class ImagePadForOutpaint(Node):
    """Pad an image with grey (0.5) for outpainting, and a mask of what to paint: the padding, fading into the
    image over `feathering` pixels."""

    category = "image"
    inputs = [Input("image", IMAGE)] + [Int(side, 0, min=0, max=MAX_RESOLUTION, step=8)
                                        for side in ("left", "top", "right", "bottom")]
    inputs += [Int("feathering", 40, min=0, max=MAX_RESOLUTION, step=1)]
    outputs = [Output(IMAGE), Output(MASK)]

    def run(self, image: torch.Tensor, left: int, top: int, right: int, bottom: int, feathering: int) -> tuple:
        batch, height, width, channels = image.shape
        shape = (batch, height + top + bottom, width + left + right, channels)
        check_memory(self.ctx.limits, "ImagePadForOutpaint.left", "the padded images", shape)
        padded = torch.full(shape, 0.5, dtype=torch.float32)
        padded[:, top:top + height, left:left + width] = image
        return (padded, outpaint_mask(height, width, left, top, right, bottom, feathering))


class ImageCrop(Node):
    """The width x height part of the images from (x, y); the start is kept inside the image."""

    category = "image/transform"
    inputs = [Input("image", IMAGE), Int("width", 512, min=1, max=MAX_RESOLUTION, step=1),
              Int("height", 512, min=1, max=MAX_RESOLUTION, step=1), Int("x", 0, min=0, max=MAX_RESOLUTION, step=1),
              Int("y", 0, min=0, max=MAX_RESOLUTION, step=1)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, width: int, height: int, x: int, y: int) -> tuple:
        x, y = min(x, image.shape[2] - 1), min(y, image.shape[1] - 1)
        return (image[:, y:y + height, x:x + width],)


class ImageFlip(Node):
    """Mirror the images: upside down (x-axis) or left to right (y-axis)."""

    category = "image/transform"
    inputs = [Input("image", IMAGE), choice("flip_method", FLIPS)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, flip_method: str) -> tuple:
        if flip_method not in FLIPS:
            raise ValueError(f"ImageFlip.flip_method: {flip_method!r} is not one of {', '.join(FLIPS)}")
        return (torch.flip(image, dims=[1 if flip_method.startswith("x") else 2]),)


class ImageRotate(Node):
    """Rotate the images clockwise by quarter turns."""

    category = "image/transform"
    inputs = [Input("image", IMAGE), choice("rotation", ROTATIONS)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, rotation: str) -> tuple:
        return (torch.rot90(image, k=quarter_turns(rotation, "ImageRotate.rotation"), dims=[2, 1]),)


def _rgb(color: int) -> tuple[float, float, float]:
    return tuple(((int(color) >> shift) & 0xFF) / 0xFF for shift in (16, 8, 0))  # type: ignore[return-value]


class EmptyImage(Node):
    """A batch of images of one colour (0xRRGGBB)."""

    category = "image"
    inputs = [Int("width", 512, min=1, max=MAX_RESOLUTION, step=1), Int("height", 512, min=1, max=MAX_RESOLUTION, step=1),
              Int("batch_size", 1, min=1, max=4096, step=None), Int("color", 0, min=0, max=0xFFFFFF, display="color", step=1)]
    outputs = [Output(IMAGE)]

    def run(self, width: int, height: int, batch_size: int, color: int) -> tuple:
        check_memory(self.ctx.limits, "EmptyImage.batch_size", "the images", (batch_size, height, width, 3))
        return (torch.tensor(_rgb(color), dtype=torch.float32).expand(batch_size, height, width, 3).clone(),)

    @classmethod
    def validate_inputs(cls, dirs: Dirs, width: int = 512, height: int = 512, batch_size: int = 1,
                        **_: Any) -> str | None:
        shape = (batch_size, height, width, 3)
        return refusal(lambda: check_memory(current_limits(), "EmptyImage.batch_size", "the images", shape))


class GetImageSize(Node):
    """The width, height and batch size of the images."""

    category = "image"
    inputs = [Input("image", IMAGE), Hidden("unique_id", "UNIQUE_ID")]
    outputs = [Output(INT, "width"), Output(INT, "height"), Output(INT, "batch_size")]

    def run(self, image: torch.Tensor, unique_id: Any = None) -> tuple:
        return (int(image.shape[2]), int(image.shape[1]), int(image.shape[0]))


def _soft_light_g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 0.25, ((16 * x - 12) * x + 4) * x, torch.sqrt(x))


def blend(a: torch.Tensor, b: torch.Tensor, mode: str) -> torch.Tensor:
    """The blend mode's picture of `a` (below) and `b` (on top), before mixing by the factor."""
    if mode == "normal":
        return b
    if mode == "multiply":
        return a * b
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "overlay":
        return torch.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":
        return torch.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (_soft_light_g(a) - a))
    if mode == "difference":
        return a - b  # signed, as in ComfyUI: the clamp afterwards cuts the negative part
    raise ValueError(f"ImageBlend.blend_mode: {mode!r} is not one of {', '.join(BLEND_MODES)}")


class ImageBlend(Node):
    """Mix image2 onto image1 by a blend mode: image1 * (1 - factor) + blended * factor, clamped to 0..1."""

    category = "image/postprocessing"
    inputs = [Input("image1", IMAGE), Input("image2", IMAGE), Float("blend_factor", 0.5, min=0.0, max=1.0, step=0.01),
              choice("blend_mode", BLEND_MODES)]
    outputs = [Output(IMAGE)]

    def run(self, image1: torch.Tensor, image2: torch.Tensor, blend_factor: float, blend_mode: str) -> tuple:
        if image2.shape[-1] > image1.shape[-1]:
            image2 = image2[..., :image1.shape[-1]]
        elif image2.shape[-1] < image1.shape[-1]:  # an opaque alpha for image2 (ComfyUI pads image1 and fails)
            image2 = F.pad(image2, (0, image1.shape[-1] - image2.shape[-1]), value=1.0)
        image2 = image2.to(image1)
        if image1.shape != image2.shape:
            image2 = _fit_image(image2, image1.shape[1], image1.shape[2], "bicubic")
        mixed = image1 * (1 - blend_factor) + blend(image1, image2, blend_mode) * blend_factor
        return (mixed.clamp(0, 1),)


def gaussian_kernel(radius: int, sigma: float) -> torch.Tensor:
    """A (2r + 1)^2 Gaussian, normalised to sum 1, over coordinates from -1 to 1 across the kernel (ComfyUI's:
    sigma is in units of the radius, not of pixels)."""
    size = 2 * radius + 1
    axis = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    d = torch.sqrt(x * x + y * y)
    g = torch.exp(-(d * d) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter(image: torch.Tensor, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    """Each channel convolved with `kernel`, the edges mirrored (reflect padding)."""
    channels = image.shape[-1]
    x = F.pad(image.movedim(-1, 1), (radius,) * 4, mode="reflect")
    weight = kernel.to(x)[None, None].expand(channels, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=channels).movedim(1, -1)


def _check_radius(image: torch.Tensor, radius: int, where: str) -> None:
    if radius >= min(image.shape[1], image.shape[2]):
        raise ValueError(f"{where}: a radius of {radius} needs an image larger than {radius} pixels each way, "
                         f"this one is {image.shape[2]}x{image.shape[1]}")


class ImageBlur(Node):
    """A Gaussian blur over (2 radius + 1) pixels."""

    category = "image/postprocessing"
    inputs = [Input("image", IMAGE), Int("blur_radius", 1, min=1, max=31, step=1), Float("sigma", 1.0, min=0.1, max=10.0, step=0.1)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, blur_radius: int, sigma: float) -> tuple:
        if blur_radius == 0:
            return (image,)
        _check_radius(image, blur_radius, "ImageBlur.blur_radius")
        return (_filter(image, gaussian_kernel(blur_radius, sigma), blur_radius),)


class ImageSharpen(Node):
    """Unsharp masking: the image minus alpha * 10 times its Gaussian blur, kept at the same brightness, clamped."""

    category = "image/postprocessing"
    inputs = [Input("image", IMAGE), Int("sharpen_radius", 1, min=1, max=31, step=1),
              Float("sigma", 1.0, min=0.1, max=10.0, step=0.01), Float("alpha", 1.0, min=0.0, max=5.0, step=0.01)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, sharpen_radius: int, sigma: float, alpha: float) -> tuple:
        if sharpen_radius == 0:
            return (image,)
        _check_radius(image, sharpen_radius, "ImageSharpen.sharpen_radius")
        kernel = (gaussian_kernel(sharpen_radius, sigma) * -(alpha * 10)).to(image.dtype)
        centre = kernel[sharpen_radius, sharpen_radius]
        kernel[sharpen_radius, sharpen_radius] = centre - kernel.sum() + 1.0  # the kernel sums to 1
        return (_filter(image, kernel, sharpen_radius).clamp(0, 1),)


class ImageScaleToTotalPixels(Node):
    """Resize images to about `megapixels` (x 1024 x 1024 pixels), keeping the aspect ratio."""

    category = "image/upscaling"
    inputs = [Input("image", IMAGE), choice("upscale_method", IMAGE_METHODS),
              Float("megapixels", 1.0, min=0.01, max=16.0, step=0.01)]
    outputs = [Output(IMAGE)]

    def run(self, image: torch.Tensor, upscale_method: str, megapixels: float) -> tuple:
        if upscale_method not in IMAGE_METHODS:
            raise ValueError(f"ImageScaleToTotalPixels.upscale_method: {upscale_method!r} is not one of "
                             f"{', '.join(IMAGE_METHODS)}")
        batch, height, width, channels = image.shape
        scale = math.sqrt(int(megapixels * 1024 * 1024) / (width * height))
        new_w, new_h = round(width * scale), round(height * scale)
        check_memory(self.ctx.limits, "ImageScaleToTotalPixels.megapixels", "the scaled images",
                     (batch, new_h, new_w, channels))
        # not clamped: ComfyUI keeps bicubic's overshoot here
        return (resize(image.movedim(-1, 1), new_w, new_h, upscale_method).movedim(1, -1),)


NODES = [ImageInvert, ImageBatch, ImageFromBatch, RepeatImageBatch, ImagePadForOutpaint, ImageCrop, ImageFlip,
         ImageRotate, EmptyImage, GetImageSize, ImageBlend, ImageBlur, ImageSharpen, ImageScaleToTotalPixels]
