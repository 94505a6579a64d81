"""The image operations (nodes/sd/image_ops.py): ComfyUI's specs, and what each computes on small tensors, checked
against hand computations or an independent numpy version."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from comfy_specs import assert_specs_match
from conftest import call
from sdgraph.limits import BudgetExceeded, Limits, configure
from sdgraph.nodes.sd import image_ops as io
from sdgraph.paths import Dirs
from sdgraph.runtime import RuntimeOptions, create_executor

NAMES = ["ImageInvert", "ImageBatch", "ImageFromBatch", "RepeatImageBatch", "ImagePadForOutpaint", "ImageCrop",
         "ImageFlip", "ImageRotate", "EmptyImage", "GetImageSize", "ImageBlend", "ImageBlur", "ImageSharpen",
         "ImageScaleToTotalPixels"]


def test_specs_are_comfyuis(tmp_path: Path):
    executor = create_executor(RuntimeOptions(base_dir=tmp_path, plugins=False))
    assert_specs_match(executor.registry.describe(Dirs(base=tmp_path, extra_model_roots=[])), NAMES)


def test_invert_batch_from_batch_repeat(ctx):
    a = torch.rand(2, 4, 4, 3)
    assert torch.equal(io.ImageInvert().run(image=a)[0], 1.0 - a)
    ramp = torch.arange(8.0).view(1, 1, 8, 1).expand(1, 4, 8, 3)  # 4x8 -> 4x4: the centre crop keeps columns 2..5
    (batch,) = io.ImageBatch().run(image1=a, image2=ramp)
    assert batch.shape == (3, 4, 4, 3) and torch.equal(batch[:2], a)
    assert batch[2, 0, :, 0].tolist() == [2.0, 3.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="ImageBatch.image2.*channels"):
        io.ImageBatch().run(image1=a, image2=torch.rand(1, 4, 4, 4))
    items = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 2, 2, 3)
    (part,) = io.ImageFromBatch().run(image=items, batch_index=3, length=9)
    assert part[:, 0, 0, 0].tolist() == [3.0, 4.0]
    (last,) = io.ImageFromBatch().run(image=items, batch_index=4095, length=1)
    assert last[:, 0, 0, 0].tolist() == [4.0]
    (rep,) = call(io.RepeatImageBatch, ctx, image=a, amount=3)
    assert torch.equal(rep, torch.cat([a, a, a]))
    ctx.services.limits = Limits(memory_bytes=a.numel() * 4 * 2)
    with pytest.raises(BudgetExceeded, match=r"RepeatImageBatch\.amount.*6x4x4x3"):
        call(io.RepeatImageBatch, ctx, image=a, amount=3)


def _pad(ctx, image, **sides):
    kw = dict(left=0, top=0, right=0, bottom=0, feathering=0) | sides
    return call(io.ImagePadForOutpaint, ctx, image=image, **kw)


def test_pad_for_outpaint_4x4_by_hand(ctx):
    image = torch.rand(1, 4, 4, 3)
    padded, mask = _pad(ctx, image, left=8, top=8, right=8, bottom=8, feathering=1)
    assert padded.shape == (1, 20, 20, 3) and mask.shape == (1, 20, 20)
    assert torch.equal(padded[:, 8:12, 8:12], image) and padded[:, :8].eq(0.5).all() and padded[:, 12:].eq(0.5).all()
    # distances: i and j from the top/left sides, 4 - i and 4 - j from the bottom/right ones; f = 1 feathers d = 0
    inner = [[1, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]]
    assert mask[0, 8:12, 8:12].tolist() == inner
    outside = mask.clone()
    outside[0, 8:12, 8:12] = 1
    assert outside.eq(1).all()
    _, hard = _pad(ctx, image, top=8, feathering=2)  # 2 * 2 is not below 4: no feathering
    assert hard[0, 8:].eq(0).all() and hard[0, :8].eq(1).all()


def test_pad_for_outpaint_feathering_5x5_by_hand(ctx):
    _, mask = _pad(ctx, torch.rand(2, 5, 5, 3), top=8, right=16, feathering=2)
    assert mask.shape == (1, 13, 21)
    # d = min(i, 5 - j); ((2 - d) / 2)^2 is 1 at d = 0 and 1/4 at d = 1
    q = 0.25
    inner = [[1, 1, 1, 1, 1], [q, q, q, q, q], [0, 0, 0, 0, q], [0, 0, 0, 0, q], [0, 0, 0, 0, q]]
    assert mask[0, 8:, :5].tolist() == inner and mask[0, :8].eq(1).all() and mask[0, :, 5:].eq(1).all()


def test_pad_for_outpaint_budget(ctx):
    ctx.services.limits = Limits(memory_bytes=10_000)
    with pytest.raises(BudgetExceeded, match=r"ImagePadForOutpaint\.left.*1x4x1004x3"):
        _pad(ctx, torch.rand(1, 4, 4, 3), left=1000)


def test_crop_flip_rotate_size():
    image = torch.arange(20.0).view(1, 4, 5, 1)
    (crop,) = io.ImageCrop().run(image=image, width=2, height=9, x=1, y=2)
    assert crop[0, ..., 0].tolist() == [[11, 12], [16, 17]]
    (corner,) = io.ImageCrop().run(image=image, width=3, height=3, x=99, y=99)  # the start stays inside
    assert corner[0, ..., 0].tolist() == [[19]]
    grid = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 2, 1)
    flip = lambda how: io.ImageFlip().run(image=grid, flip_method=how)[0][0, ..., 0].tolist()
    assert flip("x-axis: vertically") == [[3, 4], [1, 2]] and flip("y-axis: horizontally") == [[2, 1], [4, 3]]
    turn = lambda how: io.ImageRotate().run(image=grid, rotation=how)[0][0, ..., 0].tolist()
    assert turn("90 degrees") == [[3, 1], [4, 2]] and turn("270 degrees") == [[2, 4], [1, 3]]
    assert io.GetImageSize().run(image=torch.zeros(3, 7, 5, 3)) == (5, 7, 3)


def test_empty_image_and_its_budget(ctx):
    (out,) = call(io.EmptyImage, ctx, width=3, height=2, batch_size=2, color=0x336699)
    assert out.shape == (2, 2, 3, 3)
    assert torch.equal(out[1, 1, 2], torch.tensor([0x33 / 255, 0x66 / 255, 0x99 / 255], dtype=torch.float32))
    configure(Limits(memory_bytes=10 ** 6))
    try:
        problem = io.EmptyImage.validate_inputs(ctx.dirs, width=1024, height=1024, batch_size=4, color=0)
        assert io.EmptyImage.validate_inputs(ctx.dirs, width=64, height=64, batch_size=1, color=0) is None
    finally:
        configure(Limits())
    assert problem is not None and "EmptyImage.batch_size" in problem and "4x1024x1024x3" in problem


def test_blend_modes_on_one_pixel():
    a, b = 0.2, 0.7
    g = ((16 * a - 12) * a + 4) * a  # soft light's curve below 1/4
    blended = {"normal": b, "multiply": a * b, "screen": 1 - (1 - a) * (1 - b), "overlay": 2 * a * b,
               "soft_light": a + (2 * b - 1) * (g - a), "difference": a - b}
    for mode, value in blended.items():
        (out,) = io.ImageBlend().run(image1=torch.full((1, 1, 1, 3), a), image2=torch.full((1, 1, 1, 3), b),
                                     blend_factor=0.5, blend_mode=mode)
        assert out[0, 0, 0, 0].item() == pytest.approx(min(max(a * 0.5 + value * 0.5, 0.0), 1.0), abs=1e-6), mode
    (over,) = io.ImageBlend().run(image1=torch.full((1, 1, 1, 3), 0.8), image2=torch.full((1, 1, 1, 3), 0.6),
                                  blend_factor=1.0, blend_mode="overlay")
    assert over[0, 0, 0, 0].item() == pytest.approx(1 - 2 * 0.2 * 0.4)  # above 1/2: the screen half
    (sized,) = io.ImageBlend().run(image1=torch.zeros(2, 4, 4, 3), image2=torch.ones(1, 8, 6, 4), blend_factor=0.25,
                                   blend_mode="normal")
    assert sized.shape == (2, 4, 4, 3) and torch.allclose(sized, torch.full_like(sized, 0.25))


def _numpy_filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    r = kernel.shape[0] // 2
    padded = np.pad(image, ((r, r), (r, r)), mode="reflect")
    out = np.zeros_like(image)
    for i in range(image.shape[0]):
        for j in range(image.shape[1]):
            out[i, j] = (padded[i:i + 2 * r + 1, j:j + 2 * r + 1] * kernel).sum()
    return out


def _numpy_gaussian(radius: int, sigma: float) -> np.ndarray:
    coords = np.linspace(-1, 1, 2 * radius + 1)
    g = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * sigma * sigma))
    return g / g.sum()


def test_blur_and_sharpen_match_a_numpy_convolution():
    image = torch.rand(1, 6, 7, 3, generator=torch.Generator().manual_seed(3))
    for radius, sigma in ((1, 1.0), (2, 0.5)):
        (blur,) = io.ImageBlur().run(image=image, blur_radius=radius, sigma=sigma)
        want = _numpy_filter(image[0, ..., 1].double().numpy(), _numpy_gaussian(radius, sigma))
        assert np.allclose(blur[0, ..., 1].numpy(), want, atol=1e-5), (radius, sigma)
        kernel = _numpy_gaussian(radius, sigma) * -(0.7 * 10)
        kernel[radius, radius] += 1 - kernel.sum()
        (sharp,) = io.ImageSharpen().run(image=image, sharpen_radius=radius, sigma=sigma, alpha=0.7)
        want = np.clip(_numpy_filter(image[0, ..., 2].double().numpy(), kernel), 0, 1)
        assert np.allclose(sharp[0, ..., 2].numpy(), want, atol=1e-5), (radius, sigma)
    flat = torch.full((1, 5, 5, 3), 0.3)
    assert torch.allclose(io.ImageSharpen().run(image=flat, sharpen_radius=2, sigma=1.0, alpha=5.0)[0], flat)
    with pytest.raises(ValueError, match="ImageBlur.blur_radius"):
        io.ImageBlur().run(image=torch.rand(1, 3, 3, 3), blur_radius=3, sigma=1.0)


def test_scale_to_total_pixels(ctx):
    image = torch.full((1, 2, 4, 3), 0.4)
    (out,) = call(io.ImageScaleToTotalPixels, ctx, image=image, upscale_method="bilinear", megapixels=0.01)
    scale = math.sqrt(int(0.01 * 1024 * 1024) / 8)
    assert out.shape == (1, round(2 * scale), round(4 * scale), 3) == (1, 72, 145, 3)
    assert torch.allclose(out, torch.full_like(out, 0.4))
    ctx.services.limits = Limits(memory_bytes=10_000)
    with pytest.raises(BudgetExceeded, match="ImageScaleToTotalPixels.megapixels"):
        call(io.ImageScaleToTotalPixels, ctx, image=image, upscale_method="area", megapixels=1.0)
