"""Tiled VAE decode/encode and the tile blending under them (nodes/sd/tiling.py, VaeModel.*_tiled, the nodes).

- The blend equals a loop-by-loop NumPy restatement of ComfyUI's tiled_scale (written here, independently of the
  tensor code), on toy functions that see tile borders (a 3x3 convolution), for up- and downscaling.
- A toy VAE whose decoder and encoder are pointwise (each latent pixel <-> its own 8x8 block) must tile exactly.
- A toy VAE with a 3x3 convolution: tiled decode equals the independent three-pass blend, and is not the plain
  decode (tiling happened).
- The shipped tiny VAE: one tile equals plain decode; many tiles stay close (the figure is asserted).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import call, make_ctx
from toy_vae import ToyVae
from sdgraph.models import ModelManager
from sdgraph.nodes.sd.model_objects import VaeModel
from sdgraph.nodes.sd.tiling import feather, tile_count, tile_spans, tiled_scale
from sdgraph.nodes.sd.vae_tiled import VAEDecodeTiled, VAEEncodeTiled
from sdgraph.paths import PACKAGE_DATA, Dirs


# ---- an independent statement of ComfyUI's blend, in NumPy loops -------------------------------------------


def reference_tiled(x: np.ndarray, fn, tile_h: int, tile_w: int, overlap: int, scale: float) -> np.ndarray:
    """One item [C, H, W]: ComfyUI's tiled_scale written out with loops."""
    _, height, width = x.shape
    if height <= tile_h and width <= tile_w:
        return fn(x)
    probe = fn(x[:, :min(tile_h, height), :min(tile_w, width)])
    out = np.zeros((probe.shape[0], round(height * scale), round(width * scale)), np.float64)
    div = np.zeros_like(out)
    ys = range(0, height - overlap, tile_h - overlap) if height > tile_h else [0]
    xs = range(0, width - overlap, tile_w - overlap) if width > tile_w else [0]
    for y0 in ys:
        for x0 in xs:
            y = max(0, min(height - overlap, y0))
            xx = max(0, min(width - overlap, x0))
            piece = fn(x[:, y:y + min(tile_h, height - y), xx:xx + min(tile_w, width - xx)]).astype(np.float64)
            mask = np.ones_like(piece)
            f = round(overlap * scale)
            for axis in (1, 2):
                size = mask.shape[axis]
                if f >= size:
                    continue
                for t in range(f):
                    a = (t + 1) / f
                    index = [slice(None)] * 3
                    index[axis] = t
                    mask[tuple(index)] *= a
                    index[axis] = size - 1 - t
                    mask[tuple(index)] *= a
            oy, ox = round(y * scale), round(xx * scale)
            out[:, oy:oy + piece.shape[1], ox:ox + piece.shape[2]] += piece * mask
            div[:, oy:oy + piece.shape[1], ox:ox + piece.shape[2]] += mask
    return out / div


def seeded_conv(channels_in: int, channels_out: int, seed: int) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(channels_in, channels_out, 3, padding=1)
    return conv.eval().requires_grad_(False)


def upscaling_fn(conv: nn.Conv2d, factor: int):
    """A tile function that sees its borders: a 3x3 conv (zero padding) then nearest upscaling."""
    def fn(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(torch.tanh(conv(t)), scale_factor=factor, mode="nearest")
    return fn


def downscaling_fn(conv: nn.Conv2d, factor: int):
    def fn(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(torch.tanh(conv(t)), factor)
    return fn


def numpy_fn(fn):
    return lambda a: fn(torch.from_numpy(np.ascontiguousarray(a, np.float32))[None]).numpy()[0]


@pytest.mark.parametrize("size, tile, overlap, factor", [
    ((21, 30), (8, 12), 4, 2),  # uneven last tiles, rectangular tiles
    ((13, 9), (6, 6), 2, 8),  # VAE-decoder-like scale
    ((40, 24), (16, 8), 3, 1),
    ((10, 10), (16, 16), 4, 4),  # one tile: passed whole
])
def test_upscaling_blend_matches_the_loop_reference(size, tile, overlap, factor) -> None:
    fn = upscaling_fn(seeded_conv(3, 3, 0), factor)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        ours = tiled_scale(x, fn, tile, overlap, factor, 3)
        for b in range(2):
            expected = reference_tiled(x[b].numpy(), numpy_fn(fn), tile[0], tile[1], overlap, factor)
            assert np.abs(ours[b].numpy() - expected).max() < 2e-6
    plain = fn(x)
    if size[0] > tile[0]:
        assert (ours - plain).abs().max() > 1e-3  # the tiles saw borders the whole image has not


def test_downscaling_blend_matches_the_loop_reference() -> None:
    """An encoder-like function (1/8): tiles of 32 pixels, overlap 16 -> a feather of 2 latent pixels."""
    fn = downscaling_fn(seeded_conv(3, 4, 2), 8)
    x = torch.rand(1, 3, 80, 56, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ours = tiled_scale(x, fn, (32, 32), 16, 1 / 8, 4)
        expected = reference_tiled(x[0].numpy(), numpy_fn(fn), 32, 32, 16, 1 / 8)
    assert ours.shape == (1, 4, 10, 7)
    assert np.abs(ours[0].numpy() - expected).max() < 2e-6


def test_spans_feather_and_counts() -> None:
    assert tile_spans(10, 16, 4) == [(0, 10)]
    assert tile_spans(21, 8, 4) == [(0, 8), (4, 8), (8, 8), (12, 8), (16, 5)]
    assert feather(6, 2).tolist() == [0.5, 1.0, 1.0, 1.0, 1.0, 0.5]
    assert feather(3, 2).tolist() == [0.5, 1.0, 0.5]  # both ramps meet: (1/2)(1), (1)(1), ...
    assert feather(4, 3).tolist() == pytest.approx([1 / 3, 2 / 3 * 1, 1 * 2 / 3, 1 / 3])
    assert feather(4, 4).tolist() == [1.0] * 4 and feather(4, 0).tolist() == [1.0] * 4
    assert tile_count(21, 21, 8, 8, 4) == 25 == len(tile_spans(21, 8, 4)) ** 2
    with pytest.raises(ValueError, match="a tile of 4 is not larger than the overlap of 4"):
        tile_spans(10, 4, 4)


# ---- toy VAEs under the model manager ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_manager() -> ModelManager:
    return ModelManager(force_cpu=True)


@pytest.fixture
def ctx(toy_manager, tmp_path):
    return make_ctx(Dirs(base=tmp_path, extra_model_roots=[]), toy_manager)


def toy_vae(manager: ModelManager, kernel: int) -> VaeModel:
    return VaeModel(slot=manager.manage(ToyVae(kernel), f"toy-vae-{kernel}", "vae"), name=f"toy{kernel}")


def latents(h: int = 12, w: int = 18, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 4, h, w, generator=torch.Generator().manual_seed(seed))


def test_pointwise_toy_vae_tiles_exactly(toy_manager) -> None:
    vae = toy_vae(toy_manager, 1)
    z = latents()
    plain = vae.decode(z)
    tiled = vae.decode_tiled(z, tile_x=8, tile_y=8, overlap=2)  # 3 passes of many tiles
    assert tiled.shape == plain.shape == (2, 96, 144, 3)
    assert (tiled - plain).abs().max() < 1e-6
    pixels = torch.rand(2, 99, 150, 4, generator=torch.Generator().manual_seed(1))  # cropped to 96 x 144, RGB
    encoded = vae.encode(pixels)
    assert encoded.shape == (2, 4, 12, 18)
    assert (vae.encode_tiled(pixels, tile_x=64, tile_y=64, overlap=16) - encoded).abs().max() < 1e-5


def test_encode_crops_to_the_centre_as_comfyui(toy_manager) -> None:
    vae = toy_vae(toy_manager, 1)
    pixels = torch.rand(1, 19, 21, 3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(vae.encode(pixels), vae.encode(pixels[:, 1:17, 2:18]))  # offsets (19 % 8) // 2, (21 % 8) // 2


def test_bordered_toy_vae_equals_the_independent_three_pass_blend(toy_manager) -> None:
    vae = toy_vae(toy_manager, 3)
    z = latents(batch=1)
    tiled = vae.decode_tiled(z, tile_x=8, tile_y=8, overlap=2)
    module = vae.slot.module

    def raw(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module.decode(torch.from_numpy(np.ascontiguousarray(a, np.float32))[None]).sample.numpy()[0]

    x = z[0].numpy()
    passes = [reference_tiled(x, raw, th, tw, 2, 8) for th, tw in ((16, 4), (4, 16), (8, 8))]
    expected = np.clip((sum(passes) / 3 + 1) / 2, 0, 1).transpose(1, 2, 0)
    assert np.abs(tiled[0].numpy() - expected).max() < 2e-6
    assert (tiled - vae.decode(z)).abs().max() > 1e-3


def test_decode_node_caps_the_overlap_counts_progress_and_ignores_temporal_inputs(toy_manager, ctx) -> None:
    vae = toy_vae(toy_manager, 3)
    z = latents(batch=1)
    seen: list[tuple[int, int]] = []
    ctx.on_progress = lambda value, total, preview: seen.append((value, total))
    (image,) = call(VAEDecodeTiled, ctx, samples={"samples": z}, vae=vae, tile_size=64, overlap=64,
                    temporal_size=64, temporal_overlap=8)
    # overlap 64 > 64 / 4 -> 16 pixels = 2 latent pixels; tile 64 pixels = 8 latent pixels
    assert torch.equal(image, vae.decode_tiled(z, 8, 8, 2))
    expected_tiles = sum(tile_count(12, 18, h, w, 2) for h, w in ((16, 4), (4, 16), (8, 8)))
    assert seen == [(i + 1, expected_tiles) for i in range(expected_tiles)]
    (again,) = call(VAEDecodeTiled, ctx, samples={"samples": z}, vae=vae, tile_size=64, overlap=64,
                    temporal_size=8, temporal_overlap=4)
    assert torch.equal(image, again)


def test_encode_node_and_its_overlap_error(toy_manager, ctx) -> None:
    vae = toy_vae(toy_manager, 3)
    pixels = torch.rand(1, 136, 200, 3, generator=torch.Generator().manual_seed(5))
    (latent,) = call(VAEEncodeTiled, ctx, pixels=pixels, vae=vae, tile_size=128, overlap=32, temporal_size=64,
                     temporal_overlap=8)
    assert torch.equal(latent["samples"], vae.encode_tiled(pixels, 128, 128, 32))
    assert latent["samples"].shape == (1, 4, 17, 25)
    # the wide pass has tiles 32 pixels high: not larger than the overlap (ComfyUI fails there too)
    with pytest.raises(ValueError, match=r"VAEEncodeTiled\.overlap: a tile of 32 is not larger than the overlap "
                                         r"of 32; choose an overlap below half the tile size"):
        call(VAEEncodeTiled, ctx, pixels=pixels, vae=vae, tile_size=64, overlap=32, temporal_size=64,
             temporal_overlap=8)


def test_the_surface_comfyui_nodes_read(toy_manager) -> None:
    vae = toy_vae(toy_manager, 1)
    assert (vae.downscale_ratio, vae.upscale_ratio) == (8, 8)
    assert vae.spacial_compression_decode() == vae.spacial_compression_encode() == 8
    assert vae.temporal_compression_decode() is None


# ---- the shipped tiny VAE ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_vae(toy_manager) -> VaeModel:
    from sdgraph.nodes.sd.loading import load_vae

    return load_vae(PACKAGE_DATA / "models" / "checkpoints" / "sdgraph-tiny" / "vae", toy_manager)


def shapes_picture() -> torch.Tensor:
    """A 96 x 64 picture of a yellow star (latent 12 x 8)."""
    from PIL import Image

    from sdgraph.tiny.shapes import ShapeLabels, render

    picture = render(ShapeLabels("star", "yellow", "gray", "left", "large")).image
    big = Image.fromarray(picture).resize((96, 64), Image.BICUBIC)
    return torch.from_numpy(np.asarray(big, np.float32) / 255.0)[None]


def test_tiny_vae_one_tile_equals_plain_decode_and_many_tiles_stay_close(tiny_vae) -> None:
    picture = shapes_picture()
    z = tiny_vae.encode(picture)
    plain = tiny_vae.decode(z)
    one = tiny_vae.decode_tiled(z, tile_x=32, tile_y=32, overlap=8)  # every pass fits in one tile
    assert (one - plain).abs().max() < 1e-6
    # VAEDecodeTiled at tile_size 64, overlap 16: every pass tiles the 12 x 8 latent. The tiny VAE normalises over
    # 2 groups and has attention in its middle block, both computed per tile (as in ComfyUI), so the tiles see
    # less than the whole: measured mean 0.074, max 0.30 of the 0..1 range
    many = tiny_vae.decode_tiled(z, tile_x=8, tile_y=8, overlap=2)
    difference = (many - plain).abs()
    assert difference.max() > 1e-3  # the tiles did not see the whole latent
    assert difference.mean() < 0.1 and difference.max() < 0.4, (difference.mean(), difference.max())
    # Tiled encoding moves the latent along directions the decoder mostly ignores: the round trip stays close
    # (measured: mean pixel error 0.038 tiled, 0.027 plain)
    tiled = tiny_vae.encode_tiled(picture, tile_x=64, tile_y=64, overlap=16)
    assert (tiled - z).abs().max() > 1e-3
    tiled_error = (tiny_vae.decode(tiled) - picture).abs().mean()
    plain_error = (plain - picture).abs().mean()
    assert tiled_error < 2 * plain_error, (tiled_error, plain_error)
