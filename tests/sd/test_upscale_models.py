"""Upscale models: files in ESRGAN's, Real-ESRGAN's and Compact's key layouts load as the right network, compute
known functions exactly (checked against an independent computation), tile as ComfyUI does (tiled == whole for a
network without reach across pixels; the blend otherwise), halve the tile on running out of memory, and refuse
what they can not build with a message naming the input."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from conftest import call, make_ctx
from upscale_files import compact_state, esrgan_state, nearest_esrgan_state
from sdgraph.models import ModelManager
from sdgraph.nodes.sd.tiling import tiled_scale
from sdgraph.nodes.sd.upscale_model import ImageUpscaleWithModel, UpscaleModelLoader, load_upscale_model, upscale
from sdgraph.paths import Dirs

MIX = torch.tensor([[0.2, 0.5, 0.3], [0.0, 1.0, 0.0], [0.6, 0.0, 0.1]])


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("upscale_home")
    folder = root / "models" / "upscale_models"
    folder.mkdir(parents=True)
    save_file(nearest_esrgan_state(MIX), str(folder / "nearest-mix-x4.safetensors"))
    save_file(esrgan_state(seed=1), str(folder / "esrgan-x4.safetensors"))
    save_file(esrgan_state(doublings=1, seed=2), str(folder / "esrgan-x2.safetensors"))
    save_file(esrgan_state(layout="new", seed=3), str(folder / "realesrgan-x4.safetensors"))
    save_file(esrgan_state(channels_in=12, layout="new", seed=4), str(folder / "realesrgan-x2plus.safetensors"))
    torch.save({"params_ema": {f"module.{k}": v for k, v in esrgan_state(seed=1).items()}},
               str(folder / "esrgan-x4-wrapped.pth"))
    save_file(compact_state(seed=5), str(folder / "compact-x2.safetensors"))
    save_file({"layers.0.residual_group.blocks.0.norm1.weight": torch.ones(4)}, str(folder / "swinir.safetensors"))
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    return root


@pytest.fixture
def ctx(home):
    return make_ctx(Dirs(base=home, extra_model_roots=[]), ModelManager(force_cpu=True))


def load(ctx, name: str):
    (model,) = call(UpscaleModelLoader, ctx, model_name=name)
    return model


def images(batch: int = 1, h: int = 9, w: int = 13, seed: int = 0, channels: int = 3) -> torch.Tensor:
    return torch.rand(batch, h, w, channels, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name, architecture, scale", [
    ("nearest-mix-x4.safetensors", "ESRGAN", 4), ("esrgan-x4.safetensors", "ESRGAN", 4),
    ("esrgan-x2.safetensors", "ESRGAN", 2), ("realesrgan-x4.safetensors", "ESRGAN", 4),
    ("realesrgan-x2plus.safetensors", "ESRGAN", 2), ("esrgan-x4-wrapped.pth", "ESRGAN", 4),
    ("compact-x2.safetensors", "Compact", 2),
])
def test_each_layout_loads_as_its_network_and_scales_the_size(ctx, name, architecture, scale) -> None:
    model = load(ctx, name)
    assert (model.architecture, model.scale, model.input_channels) == (architecture, scale, 3)
    (out,) = call(ImageUpscaleWithModel, ctx, upscale_model=model, image=images(2, 9, 13))
    assert out.shape == (2, 9 * scale, 13 * scale, 3)
    assert 0 <= out.min() and out.max() <= 1


def test_a_known_esrgan_is_nearest_upscaling_then_a_colour_mix(ctx) -> None:
    x = images(2, 11, 7)
    (out,) = call(ImageUpscaleWithModel, ctx, upscale_model=load(ctx, "nearest-mix-x4.safetensors"), image=x)
    expected = torch.einsum("ck,bhwk->bhwc", MIX, x.repeat_interleave(4, 1).repeat_interleave(4, 2)).clamp(0, 1)
    assert (out - expected).abs().max() < 1e-6


def test_a_known_compact_is_nearest_plus_its_pixel_shuffled_bias(ctx, home, tmp_path) -> None:
    """Zero weights in the last convolution: out(2i+dy, 2j+dx, c) = x(i, j, c) + bias[4c + 2dy + dx]."""
    state = compact_state(seed=6)
    last = max(int(k.split(".")[1]) for k in state)
    state[f"body.{last}.weight"] = torch.zeros_like(state[f"body.{last}.weight"])
    state[f"body.{last}.bias"] = torch.arange(12, dtype=torch.float32) / 40
    path = home / "models" / "upscale_models" / "compact-known.safetensors"
    save_file(state, str(path))
    x = images(1, 5, 6) * 0.5
    (out,) = call(ImageUpscaleWithModel, ctx, upscale_model=load(ctx, path.name), image=x)
    for dy in (0, 1):
        for dx in (0, 1):
            for c in range(3):
                got = out[0, dy::2, dx::2, c]
                assert (got - (x[0, :, :, c] + (4 * c + 2 * dy + dx) / 40)).abs().max() < 1e-6


def test_tiled_equals_whole_for_a_network_without_reach(ctx) -> None:
    model = load(ctx, "nearest-mix-x4.safetensors")
    x = images(1, 90, 61, seed=3)
    whole = upscale(model, x, model.placed(), tile=512)
    tiled = upscale(model, x, model.placed(), tile=64)  # 64-pixel tiles overlapping by 32: many seams
    assert (whole - tiled).abs().max() < 1e-6


def test_tiles_of_a_random_esrgan_blend_as_comfyui_blends_them(ctx) -> None:
    """A real RRDB sees across tile borders: tiled differs from whole, and equals the blend of its tiles."""
    model = load(ctx, "esrgan-x2.safetensors")
    x = images(1, 70, 40, seed=4)
    run = model.placed()
    tiled = upscale(model, x, run, tile=64)
    assert (tiled - upscale(model, x, run)).abs().max() > 1e-4
    with torch.inference_mode():
        blended = tiled_scale(x.movedim(-1, 1), run, (64, 64), 32, 2, 3).clamp(0, 1).movedim(1, -1)
    assert torch.equal(tiled, blended)


def test_out_of_memory_halves_the_tile_down_to_128(ctx) -> None:
    model = load(ctx, "nearest-mix-x4.safetensors")
    x = images(1, 260, 24, seed=5)
    sizes: list[tuple[int, int]] = []
    real = model.placed()

    def tight(tile: torch.Tensor) -> torch.Tensor:
        sizes.append(tuple(tile.shape[-2:]))
        if max(tile.shape[-2:]) > 128:
            raise torch.OutOfMemoryError("simulated")
        return real(tile)

    out = upscale(model, x, tight)
    # one 512 tile (the whole image), then the first 256 tile, then 3 tiles of at most 128 (starts 0, 96, 192)
    assert sizes == [(260, 24), (256, 24), (128, 24), (128, 24), (68, 24)]
    assert (out - upscale(model, x, real)).abs().max() < 1e-6

    def never(tile: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(torch.OutOfMemoryError):
        upscale(model, x, never)


def test_the_x2plus_layout_pads_odd_sizes_and_crops_them_back(ctx) -> None:
    model = load(ctx, "realesrgan-x2plus.safetensors")
    assert model.size_multiple == 4
    (odd,) = call(ImageUpscaleWithModel, ctx, upscale_model=model, image=images(1, 7, 10, seed=6))
    assert odd.shape == (1, 14, 20, 3)


def test_wrapped_pth_and_plain_safetensors_are_the_same_model(ctx) -> None:
    x = images(1, 12, 12, seed=7)
    a = call(ImageUpscaleWithModel, ctx, upscale_model=load(ctx, "esrgan-x4.safetensors"), image=x)[0]
    b = call(ImageUpscaleWithModel, ctx, upscale_model=load(ctx, "esrgan-x4-wrapped.pth"), image=x)[0]
    assert torch.equal(a, b)


def test_the_loader_reads_a_file_once(ctx) -> None:
    before = ctx.services.models.stats.disk_loads
    assert load(ctx, "esrgan-x2.safetensors") is load(ctx, "esrgan-x2.safetensors")
    assert ctx.services.models.stats.disk_loads == before + 1


@pytest.mark.parametrize("name, message", [
    ("swinir.safetensors", r"UpscaleModelLoader\.model_name: swinir\.safetensors: the weights are a SwinIR / HAT "
                           r"/ DRCT \(transformer\) model; sdgraph builds ESRGAN"),
])
def test_unsupported_files_are_refused_naming_the_input(ctx, name, message) -> None:
    with pytest.raises(ValueError, match=message):
        load(ctx, name)


def test_a_wrong_channel_count_is_refused_naming_the_input(ctx) -> None:
    with pytest.raises(ValueError, match=r"ImageUpscaleWithModel\.image: 4 channels, but esrgan-x2\.safetensors "
                                         r"takes 3"):
        call(ImageUpscaleWithModel, ctx, upscale_model=load(ctx, "esrgan-x2.safetensors"),
             image=images(channels=4))


def test_a_too_large_result_is_refused_before_it_is_made(ctx) -> None:
    from sdgraph.limits import BudgetExceeded, Limits

    ctx.services.limits = Limits(memory_bytes=10_000_000)
    small = ctx
    with pytest.raises(BudgetExceeded, match="ImageUpscaleWithModel.image"):
        call(ImageUpscaleWithModel, small, upscale_model=load(ctx, "esrgan-x4.safetensors"),
             image=torch.zeros(1, 512, 512, 3))


def test_nearest_reference_is_what_f_interpolate_gives() -> None:
    """The expectation above, checked once against torch's own nearest upscaling."""
    x = images(1, 3, 4)
    assert torch.equal(x.repeat_interleave(4, 1).repeat_interleave(4, 2),
                       F.interpolate(x.movedim(-1, 1), scale_factor=4, mode="nearest").movedim(1, -1))
