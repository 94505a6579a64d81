"""ImageStitch, ResizeAndPadImage and ImageScaleToMaxDimension (nodes/sd/image_layout.py): where each pixel of the
result comes from, built by hand with numpy, and Lanczos through 8 bits (truncated) as ComfyUI resizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import call, make_ctx
from sdgraph.limits import BudgetExceeded, Limits
from sdgraph.nodes.sd import image as image_nodes
from sdgraph.nodes.sd.image_layout import ImageScaleToMaxDimension, ImageStitch, ResizeAndPadImage
from sdgraph.paths import Dirs


@pytest.fixture
def ctx(tmp_path):  # no models needed
    return make_ctx(Dirs(base=tmp_path, extra_model_roots=[]), None)


def ramp(batch: int, height: int, width: int, channels: int = 3, start: float = 0.0) -> torch.Tensor:
    """Distinct values in 0..1, so that every placed pixel can be traced."""
    count = batch * height * width * channels
    return (torch.arange(count, dtype=torch.float32) / (2 * count) + start).view(batch, height, width, channels)


def stitch(ctx, image1, image2, direction="right", match=False, spacing=0, color="white"):
    return call(ImageStitch, ctx, image1=image1, image2=image2, direction=direction, match_image_size=match,
                spacing_width=spacing, spacing_color=color)[0]


def test_without_matching_the_lower_image_is_centred_on_padding_and_a_bar_goes_between(ctx):
    a, b = ramp(1, 2, 3), ramp(1, 5, 2, start=0.5)
    out = stitch(ctx, a, b, spacing=4, color="black").numpy()
    expected = np.zeros((1, 5, 3 + 4 + 2, 3), np.float32)  # black padding and a black bar
    expected[:, 1:3, :3] = a.numpy()  # 3 rows of padding: 1 above, 2 below
    expected[:, :, 7:] = b.numpy()
    assert np.array_equal(out, expected)
    # left: image2 first; the grey padding is white's 1.0, the bar white too
    out = stitch(ctx, a, b, direction="left", spacing=2, color="white").numpy()
    expected = np.ones((1, 5, 2 + 2 + 3, 3), np.float32)
    expected[:, :, :2] = b.numpy()
    expected[:, 1:3, 4:] = a.numpy()
    assert np.array_equal(out, expected)


def test_a_coloured_bar_pads_with_black_and_fills_only_its_channel(ctx):
    a, b = ramp(1, 4, 2), ramp(1, 4, 3, start=0.5)
    out = stitch(ctx, a, b, direction="down", spacing=2, color="red").numpy()
    assert out.shape == (1, 4 + 2 + 4, 3, 3)
    # one column of padding: 1 // 2 = 0 before, 1 after
    assert np.array_equal(out[:, :4, :2], a.numpy()) and np.array_equal(out[:, :4, 2:], np.zeros((1, 4, 1, 3)))
    assert np.array_equal(out[:, 4:6], np.broadcast_to([1.0, 0.0, 0.0], (1, 2, 3, 3)))
    assert np.array_equal(out[:, 6:], b.numpy())
    (up,) = call(ImageStitch, ctx, image1=a, image2=b, direction="up", match_image_size=False, spacing_width=0,
                 spacing_color="green")
    assert np.array_equal(up[:, :4].numpy(), b.numpy()) and np.array_equal(up[:, 4:, :2].numpy(), a.numpy())


def test_matching_scales_image2_with_lanczos_through_8_bits(ctx):
    a, b = ramp(1, 6, 4), ramp(1, 3, 2, start=0.5)
    out = stitch(ctx, a, b, match=True).numpy()
    # image2 is scaled to image1's height, its width int(6 * 2 / 3) = 4
    pixels = (b[0].numpy() * 255).astype(np.uint8)
    lanczos = np.asarray(Image.fromarray(pixels).resize((4, 6), Image.Resampling.LANCZOS)).astype(np.float32) / 255
    assert out.shape == (1, 6, 8, 3)
    assert np.array_equal(out[0, :, :4], a[0].numpy()) and np.array_equal(out[0, :, 4:], lanczos)
    # the same size still goes through 8 bits: 0.5 becomes 127/255
    flat = stitch(ctx, a, torch.full((1, 6, 4, 3), 0.5), direction="down", match=True)
    assert flat.shape == (1, 12, 4, 3) and torch.all(flat[:, 6:] == 127 / 255)


def test_batches_channels_and_a_missing_image2(ctx):
    a, b = ramp(2, 2, 2, channels=4), ramp(3, 2, 2, start=0.5)
    out = stitch(ctx, a, b, spacing=2, color="blue")
    assert out.shape == (3, 2, 6, 4)
    assert torch.equal(out[:, :, :2], a[[0, 1, 1]])  # image1's last item repeated
    assert torch.equal(out[:, :, 4:, :3], b) and torch.all(out[:, :, 4:, 3] == 1)  # an opaque alpha added
    assert torch.equal(out[0, 0, 2], torch.tensor([0.0, 0.0, 1.0, 1.0]))  # blue bar, opaque
    assert call(ImageStitch, ctx, image1=a, direction="right", match_image_size=True, spacing_width=0,
                spacing_color="white")[0] is a


def test_resize_and_pad_keeps_the_aspect_ratio_and_centres_on_the_colour(ctx):
    image = ramp(2, 2, 4)
    (out,) = call(ResizeAndPadImage, ctx, image=image, target_width=8, target_height=8, padding_color="white",
                  interpolation="nearest-exact")
    # scale min(8 / 4, 8 / 2) = 2: an 8 x 4 picture, rows 2..5 of the frame
    doubled = np.repeat(np.repeat(image.numpy(), 2, axis=1), 2, axis=2)
    assert out.shape == (2, 8, 8, 3) and np.array_equal(out[:, 2:6].numpy(), doubled)
    assert torch.all(out[:, :2] == 1) and torch.all(out[:, 6:] == 1)
    (odd,) = call(ResizeAndPadImage, ctx, image=ramp(1, 5, 4, start=0.1), target_width=6, target_height=10,
                  padding_color="black", interpolation="bilinear")
    # scale min(6 / 4, 10 / 5) = 1.5: 6 x int(7.5) = 6 x 7 (truncated), from row (10 - 7) // 2 = 1
    assert torch.all(odd[:, :1] == 0) and torch.all(odd[:, 8:] == 0) and odd[:, 1:8].min() > 0


def test_scale_to_max_dimension(ctx):
    wide = ramp(1, 20, 30)
    (out,) = call(ImageScaleToMaxDimension, ctx, image=wide, upscale_method="nearest-exact", largest_size=60)
    assert np.array_equal(out.numpy(), np.repeat(np.repeat(wide.numpy(), 2, axis=1), 2, axis=2))
    (tall,) = call(ImageScaleToMaxDimension, ctx, image=ramp(1, 30, 20), upscale_method="area", largest_size=15)
    assert tall.shape == (1, 15, 10, 3)
    (square,) = call(ImageScaleToMaxDimension, ctx, image=ramp(1, 9, 9), upscale_method="bicubic",
                     largest_size=4)
    assert square.shape == (1, 4, 4, 3)
    with pytest.raises(ValueError, match="ImageScaleToMaxDimension.largest_size"):
        call(ImageScaleToMaxDimension, ctx, image=wide, upscale_method="area", largest_size=0)
    ctx.services.limits = Limits(memory_bytes=10_000)
    with pytest.raises(BudgetExceeded, match=r"ImageScaleToMaxDimension\.largest_size.*1x1000x1500x3"):
        call(ImageScaleToMaxDimension, ctx, image=wide, upscale_method="area", largest_size=1500)
    with pytest.raises(BudgetExceeded, match=r"ImageStitch\.image2"):
        stitch(ctx, ramp(1, 20, 30), ramp(1, 20, 30))


def test_image_scale_lanczos_truncates_to_8_bits_as_comfyui(ctx):
    (out,) = call(image_nodes.ImageScale, ctx, image=torch.full((1, 4, 4, 3), 0.5), upscale_method="lanczos",
                  width=8, height=8, crop="disabled")
    assert torch.all(out == 127 / 255)  # 127.5 truncated, not rounded to 128
