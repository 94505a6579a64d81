"""ImageQuantize, Morphology, Canny and ImageAddNoise (nodes/sd/image_filters.py), checked on pictures whose
answer is known by hand, against Pillow's quantiser, and against kornia's square-window morphology (what ComfyUI
calls)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from kornia import morphology as kornia_morphology
from PIL import Image

from conftest import call, make_ctx
from sdgraph.limits import BudgetExceeded, Limits
from sdgraph.nodes.sd.image_filters import Canny, ImageAddNoise, ImageQuantize, Morphology, bayer_matrix
from sdgraph.paths import Dirs


@pytest.fixture
def ctx(tmp_path):  # no models needed
    return make_ctx(Dirs(base=tmp_path, extra_model_roots=[]), None)


def colours_of(image: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(p) for p in (image.reshape(-1, 3) * 255).round().int().tolist()}


def quantized(image, colors, dither):
    return ImageQuantize().run(image=image, colors=colors, dither=dither)[0]


# ---- quantisation --------------------------------------------------------------------------------------------


def test_four_colours_quantised_to_four_stay_as_they_are():
    picture = torch.zeros(1, 8, 8, 3)
    picture[:, :4, :4] = torch.tensor([255, 0, 0]) / 255
    picture[:, :4, 4:] = torch.tensor([0, 255, 0]) / 255
    picture[:, 4:, :4] = torch.tensor([20, 40, 200]) / 255
    picture[:, 4:, 4:] = torch.tensor([250, 250, 250]) / 255
    assert torch.equal(quantized(picture, 4, "none"), picture)


def test_without_dithering_only_palette_colours_are_left_and_they_are_pillows():
    generator = torch.Generator().manual_seed(3)
    picture = torch.rand(2, 16, 16, 3, generator=generator)
    out = quantized(picture, 8, "none")
    for item, result in zip(picture, out):
        assert len(colours_of(result)) <= 8
        pixels = Image.fromarray((item.numpy() * 255).astype(np.uint8))
        palette = pixels.quantize(colors=8)
        expected = np.asarray(pixels.quantize(palette=palette, dither=Image.Dither.NONE).convert("RGB"))
        assert np.array_equal((result.numpy() * 255).round().astype(np.uint8), expected)
        palette_colours = {tuple(palette.getpalette()[3 * k:3 * k + 3]) for k in range(len(palette.getpalette()) // 3)}
        assert colours_of(result) <= palette_colours


def test_floyd_steinberg_keeps_the_local_mean_that_plain_quantising_loses():
    gradient = torch.linspace(0, 1, 32).view(1, 1, 32, 1).expand(1, 32, 32, 3).contiguous()
    plain, diffused = quantized(gradient, 2, "none"), quantized(gradient, 2, "floyd-steinberg")
    assert len(colours_of(diffused)) <= 2 and not torch.equal(plain, diffused)
    low, high = sorted(colours_of(diffused))  # the two palette greys (median cut: 57 and 189)
    between = (gradient[0, 0, :, 0] >= low[0] / 255) & (gradient[0, 0, :, 0] <= high[0] / 255)
    column_error = lambda out: (out - gradient).mean(dim=(0, 1, 3))[between].abs().mean()  # noqa: E731
    assert column_error(diffused) < column_error(plain) / 3


def test_the_bayer_matrices_are_the_classic_threshold_maps():
    assert bayer_matrix(2).tolist() == [[-0.375, 0.125], [0.375, -0.125]]
    order4 = [[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]]
    assert ((bayer_matrix(4) + 0.5) * 16 - 0.5).tolist() == order4
    for order in (8, 16):
        values = sorted(((bayer_matrix(order) + 0.5) * order * order - 0.5).round().int().flatten().tolist())
        assert values == list(range(order * order))


def test_bayer_dithering_lights_the_share_of_each_tile_that_the_grey_level_asks_for():
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:, 16:] = 255
    pixels[8:16, 8:16] = 120  # a mid grey and a quarter grey on the black half, two 4x4 tiles each way
    pixels[20:28, 8:16] = 60
    palette = Image.fromarray(pixels).quantize(colors=2).getpalette()
    dark, light = min(palette), max(palette)  # median cut: 9 and 240
    assert 116 < (dark + light) / 2 < 128
    out = quantized(torch.from_numpy(pixels.astype(np.float32) / 255)[None], 2, "bayer-4")
    assert colours_of(out) == {(dark,) * 3, (light,) * 3}
    # spread 2 * 256 / 2 colours: for the matrix entry m = (k + 0.5) / 16 - 0.5, grey + 256 * m + 0.5 (truncated)
    # is 16 k for the mid grey, nearer light than dark from k = 8 on (half the tile); 16 k - 60 for the quarter
    # grey, from k = 12 on (a quarter)
    index = ((bayer_matrix(4) + 0.5) * 16 - 0.5).round()
    for rows, first in ((slice(8, 16), 8), (slice(20, 28), 12)):
        patch = out[0, rows, 8:16, 0] == light / 255
        for top in (0, 4):
            for left in (0, 4):
                assert torch.equal(patch[top:top + 4, left:left + 4], index >= first)
    assert torch.all(out[0, :, 16:] == light / 255)  # 255 + 256 m + 0.5 stays above 135


def test_quantize_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="ImageQuantize.image.*4 channels"):
        quantized(torch.zeros(1, 4, 4, 4), 4, "none")
    with pytest.raises(ValueError, match="ImageQuantize.dither"):
        quantized(torch.zeros(1, 4, 4, 3), 4, "bayer-3")


# ---- morphology ----------------------------------------------------------------------------------------------


def morph(ctx, image, operation, size):
    return call(Morphology, ctx, image=image, operation=operation, kernel_size=size)[0]


def grid(height: int, width: int, *white: tuple[int, int]) -> torch.Tensor:
    image = torch.zeros(1, height, width, 3)
    for y, x in white:
        image[0, y, x] = 1.0
    return image


def test_erode_and_dilate_a_known_mask(ctx):
    dot = grid(11, 11, (5, 5))
    assert torch.equal(morph(ctx, dot, "dilate", 3)[0, ..., 0], torch.nn.functional.pad(torch.ones(3, 3), (4,) * 4))
    # a 4-wide window is anchored at its element 2: the dot spreads two pixels up and left, one down and right
    even = torch.zeros(11, 11)
    even[3:7, 3:7] = 1
    assert torch.equal(morph(ctx, dot, "dilate", 4)[0, ..., 0], even)
    square = torch.zeros(1, 9, 9, 3)
    square[:, 2:7, 2:7] = 1
    eroded = torch.zeros(9, 9)
    eroded[3:6, 3:6] = 1
    assert torch.equal(morph(ctx, square, "erode", 3)[0, ..., 0], eroded)
    white = torch.ones(1, 5, 5, 3)  # outside the picture does not count: a white picture stays white
    assert torch.equal(morph(ctx, white, "erode", 3), white)
    assert torch.equal(morph(ctx, torch.zeros(1, 5, 5, 3), "dilate", 5), torch.zeros(1, 5, 5, 3))


def test_open_close_gradient_and_hats_on_a_square_with_a_dot_and_a_hole(ctx):
    picture = torch.zeros(1, 16, 16, 3)
    picture[:, 2:9, 2:9] = 1  # a 7x7 square ...
    picture[:, 5, 5] = 0  # ... with a hole
    picture[:, 12, 12] = 1  # and a lone dot (away from the border, where closing would keep what it grew)
    hole, dot = grid(16, 16, (5, 5)), grid(16, 16, (12, 12))
    square = picture + hole - dot
    assert torch.equal(morph(ctx, picture, "open", 3), picture - dot)  # the dot goes, the square stays
    assert torch.equal(morph(ctx, picture, "close", 3), picture + hole)  # the hole fills
    assert torch.equal(morph(ctx, picture, "top_hat", 3), dot)
    assert torch.equal(morph(ctx, picture, "bottom_hat", 3), hole)
    ring = morph(ctx, square, "gradient", 3)[0, ..., 0]
    inside = torch.zeros(16, 16)
    inside[3:8, 3:8] = 1
    outside = torch.zeros(16, 16)
    outside[1:10, 1:10] = 1
    assert torch.equal(ring, outside - inside)  # one pixel each side of the square's edge


@pytest.mark.parametrize("size", [3, 4, 7, 10, 40])  # 40 > 2 * 13 + 2: a shortened window
def test_every_operation_equals_kornias_square_window(ctx, size):
    picture = torch.rand(2, 13, 17, 3, generator=torch.Generator().manual_seed(size))
    reference = {"erode": kornia_morphology.erosion, "dilate": kornia_morphology.dilation,
                 "open": kornia_morphology.opening, "close": kornia_morphology.closing,
                 "gradient": kornia_morphology.gradient, "top_hat": kornia_morphology.top_hat,
                 "bottom_hat": kornia_morphology.bottom_hat}
    for operation, function in reference.items():
        expected = function(picture.movedim(-1, 1), torch.ones(size, size)).movedim(1, -1)
        assert torch.equal(morph(ctx, picture, operation, size), expected), operation


def test_a_window_past_the_picture_takes_the_whole_picture(ctx):
    picture = torch.rand(1, 4, 5, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(morph(ctx, picture, "erode", 999), picture.amin(dim=(1, 2), keepdim=True).expand_as(picture))
    assert torch.equal(morph(ctx, picture, "dilate", 998), picture.amax(dim=(1, 2), keepdim=True).expand_as(picture))


def test_morphology_refuses_a_bad_operation_and_an_oversized_result(ctx):
    with pytest.raises(ValueError, match="Morphology.operation"):
        morph(ctx, torch.zeros(1, 4, 4, 3), "thin", 3)
    ctx.services.limits = Limits(memory_bytes=10_000)
    with pytest.raises(BudgetExceeded, match=r"Morphology\.kernel_size"):
        morph(ctx, torch.zeros(1, 64, 64, 3), "erode", 3)


# ---- Canny ---------------------------------------------------------------------------------------------------


def canny(ctx, image, low=0.4, high=0.8):
    return call(Canny, ctx, image=image, low_threshold=low, high_threshold=high)[0]


def test_canny_finds_the_four_edges_of_a_square(ctx):
    picture = torch.zeros(1, 32, 32, 3)
    picture[:, 8:24, 8:24] = 1.0
    edges = canny(ctx, picture)
    assert edges.shape == (1, 32, 32, 3) and torch.equal(edges[..., 0], edges[..., 2])
    found = edges[0, ..., 0]
    assert set(found.unique().tolist()) == {0.0, 1.0}
    near = torch.zeros(32, 32, dtype=torch.bool)
    near[6:26, 6:26] = True
    near[10:22, 10:22] = False
    assert found[~near].sum() == 0  # nothing inside the square or far from it
    for side in (found[6:9, 10:22], found[23:26, 10:22], found[10:22, 6:9].T, found[10:22, 23:26].T):
        assert side.amax(dim=0).sum() == 12  # every column (row) along each side has its edge pixel
    faint = picture * 0.05  # a 5% step is under both thresholds
    assert canny(ctx, faint).sum() == 0
    assert canny(ctx, faint, low=0.01, high=0.02).sum() > 40


def test_canny_hysteresis_keeps_weak_edge_pixels_only_where_they_join_strong_ones(ctx):
    fading = torch.zeros(1, 32, 64, 3)
    fading[:, 16:] = torch.linspace(1.0, 0.2, 64)[None, :, None]  # one edge, strong on the left, weak on the right
    line = lambda low, high: canny(ctx, fading, low, high)[0, ..., 0].amax(dim=0)  # noqa: E731 - per column
    assert torch.all(line(0.4, 0.8) == 1)  # the weak end hangs on to the strong part
    strong_only = line(0.8, 0.8)
    assert torch.all(strong_only[:50] == 1) and torch.all(strong_only[58:] == 0)
    weak = torch.zeros(1, 32, 64, 3)
    weak[:, 16:] = 0.2  # the same weak edge on its own: nothing strong to start from
    assert canny(ctx, weak, 0.4, 0.8).sum() == 0 and canny(ctx, weak, 0.4, 0.5)[..., 0].sum() == 64


def test_canny_refuses_thresholds_out_of_order_and_odd_channels(ctx):
    with pytest.raises(ValueError, match="Canny.low_threshold"):
        canny(ctx, torch.zeros(1, 8, 8, 3), low=0.9, high=0.2)
    with pytest.raises(ValueError, match="Canny.image.*2 channels"):
        canny(ctx, torch.zeros(1, 8, 8, 2))
    rgba = torch.zeros(1, 16, 16, 4)
    rgba[:, 4:12, 4:12, :3] = 1
    assert torch.equal(canny(ctx, rgba), canny(ctx, rgba[..., :3]))  # the alpha channel is left out


# ---- noise ---------------------------------------------------------------------------------------------------


def test_add_noise_draws_as_comfyui_does_from_the_seeded_default_generator():
    picture = torch.rand(2, 8, 8, 3, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        expected = torch.clamp(picture + 0.3 * torch.randn(picture.size()), 0.0, 1.0)
    (out,) = ImageAddNoise().run(image=picture, seed=1234, strength=0.3)
    assert torch.equal(out, expected) and out.min() == 0 and out.max() == 1
    assert torch.equal(ImageAddNoise().run(image=picture, seed=0, strength=0.0)[0], picture)
    (top,) = ImageAddNoise().run(image=picture, seed=2 ** 64 - 1, strength=0.1)
    with torch.random.fork_rng():
        torch.manual_seed(2 ** 64 - 1)
        assert torch.equal(top, torch.clamp(picture + 0.1 * torch.randn(picture.size()), 0.0, 1.0))
