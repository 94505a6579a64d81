"""FreeU, FreeU_V2, PatchModelAddDownscale and HyperTile on the tiny SD1 model: what their patches do to the
UNet's features and attention, against expectations computed here by other means."""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

from conftest import call
from sdgraph.nodes.sd.schedules import schedule_of
from sdgraph.nodes.sd.unet_patches import (FreeU, FreeU_V2, HyperTile, HyperTilePatch, PatchModelAddDownscale,
                                          freeu_patch)
from sdgraph.nodes.sd.unet_walk import patched_unet


def run(model: Any, sigma: float = 5.0, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """One UNet call of a MODEL with its transformer_options, as the sampler makes it."""
    unet = model.unet()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    context = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    options = {**model.model_options["transformer_options"], "cond_or_uncond": [0] * batch,
               "sigmas": torch.full((batch,), sigma)}
    with torch.inference_mode():
        return patched_unet(unet, x, torch.tensor([500.0]), context, options)


def plain(model: Any, batch: int = 2, seed: int = 0) -> torch.Tensor:
    unet = model.unet()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    context = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    with torch.inference_mode():
        return unet(x, torch.tensor([500.0]), encoder_hidden_states=context, return_dict=False)[0]


def output_recorder(store: list) -> Callable:
    def patch(h: torch.Tensor, skip: torch.Tensor, options: dict) -> tuple:
        store.append((options["block"], h.clone(), skip.clone()))
        return h, skip
    return patch


def input_recorder(store: list) -> Callable:
    def patch(h: torch.Tensor, options: dict) -> torch.Tensor:
        store.append((options["block"], h.clone()))
        return h
    return patch


# ---- FreeU ---------------------------------------------------------------------------------------------------


def low_frequency_reference(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x with its Fourier modes of frequency 0 and -1 along each spatial axis (the 2x2 block FreeU's threshold 1
    picks around the centre of the shifted spectrum) multiplied by scale: explicit DFT matrices, float64."""
    height, width = x.shape[-2:]

    def dft(n: int) -> torch.Tensor:
        k = torch.arange(n, dtype=torch.float64)
        return torch.exp(-2j * math.pi * k[:, None] * k[None, :] / n)

    fy, fx = dft(height), dft(width)
    spectrum = torch.einsum("ky,bcyx,lx->bckl", fy, x.double().to(torch.complex128), fx)
    mask = torch.ones(height, width, dtype=torch.float64)
    rows, cols = sorted({0, height - 1}), sorted({0, width - 1})
    mask[torch.tensor(rows)[:, None], torch.tensor(cols)[None, :]] = scale
    back = torch.einsum("ky,bckl,lx->bcyx", fy.conj(), spectrum * mask, fx.conj()) / (height * width)
    return back.real.float()


def test_freeu_scales_the_backbone_half_and_filters_the_skip_by_channel_count() -> None:
    g = torch.Generator().manual_seed(0)
    patch = freeu_patch(8, b1=1.5, b2=0.5, s1=0.3, s2=2.0, v2=False)
    for channels, (b, s) in ((32, (1.5, 0.3)), (16, (0.5, 2.0))):
        h, skip = torch.randn(2, channels, 6, 5, generator=g), torch.randn(2, channels, 6, 5, generator=g)
        new_h, new_skip = patch(h.clone(), skip.clone(), {})
        assert torch.equal(new_h[:, :channels // 2], h[:, :channels // 2] * b)
        assert torch.equal(new_h[:, channels // 2:], h[:, channels // 2:])
        torch.testing.assert_close(new_skip, low_frequency_reference(skip, s), rtol=0, atol=1e-5)
    h, skip = torch.randn(1, 24, 4, 4, generator=g), torch.randn(1, 24, 4, 4, generator=g)
    new_h, new_skip = patch(h, skip, {})
    assert new_h is h and new_skip is skip  # other widths pass through


def test_freeu_v2_weights_the_backbone_factor_by_the_normalised_mean_map() -> None:
    g = torch.Generator().manual_seed(1)
    h, skip = torch.randn(2, 16, 4, 4, generator=g), torch.randn(2, 16, 4, 4, generator=g)
    new_h, _ = freeu_patch(8, b1=1.0, b2=1.8, s1=1.0, s2=1.0, v2=True)(h.clone(), skip, {})
    for item in range(2):
        mean = h[item].mean(0)
        weight = (mean - mean.min()) / (mean.max() - mean.min())
        torch.testing.assert_close(new_h[item, :8], h[item, :8] * (0.8 * weight + 1), rtol=0, atol=1e-6)
        assert torch.equal(new_h[item, 8:], h[item, 8:])


@pytest.mark.parametrize("node", [FreeU, FreeU_V2])
def test_freeu_nodes_patch_the_unets_skips(sd1: tuple, ctx: Any, node: type) -> None:
    model = sd1[0]
    before: list = []
    after: list = []
    recorded = model.clone()
    recorded.set_model_output_block_patch(output_recorder(before))
    patched = call(node, ctx, model=recorded, b1=1.4, b2=1.7, s1=0.6, s2=0.4)[0]
    patched.set_model_output_block_patch(output_recorder(after))
    out = run(patched)
    assert out.shape == (2, 4, 8, 8) and not torch.allclose(out, plain(model))
    assert len(recorded.model_options["transformer_options"]["patches"]["output_block_patch"]) == 1
    widths = {h.shape[1] for _, h, _ in before}
    assert widths == {64, 32}  # 2x and 1x the base width 32: only the 64-wide blocks are FreeU's (b2, s2)
    for (block, h, skip), (block_after, h_after, skip_after) in zip(before, after):
        assert block == block_after
        if h.shape[1] != 64:
            assert torch.equal(h_after, h) and torch.equal(skip_after, skip)
            continue
        factor: Any = 1.7
        if node is FreeU_V2:
            mean = h.mean(1, keepdim=True)
            low = mean.amin(dim=(2, 3), keepdim=True)
            factor = 0.7 * (mean - low) / (mean.amax(dim=(2, 3), keepdim=True) - low) + 1
        torch.testing.assert_close(h_after[:, :32], h[:, :32] * factor, rtol=0, atol=1e-6)
        torch.testing.assert_close(skip_after, low_frequency_reference(skip, 0.4), rtol=0, atol=1e-5)


# ---- deep shrink ---------------------------------------------------------------------------------------------


def _shrink(ctx: Any, model: Any, after_skip: bool, **kw: Any) -> Any:
    inputs = dict(model=model, block_number=1, downscale_factor=2.0, start_percent=0.0, end_percent=0.35,
                  downscale_after_skip=after_skip, downscale_method="bicubic", upscale_method="bicubic")
    return call(PatchModelAddDownscale, ctx, **{**inputs, **kw})[0]


def test_deep_shrink_shrinks_the_chosen_block_and_grows_back_to_the_skip(sd1: tuple, ctx: Any) -> None:
    model = sd1[0]
    sigma_end = schedule_of(model.alphas_cumprod).percent_to_sigma(0.35)
    seen_in: list = []
    before_out: list = []
    after_out: list = []
    recorded = model.clone()
    recorded.set_model_input_block_patch(input_recorder(seen_in))
    recorded.set_model_output_block_patch(output_recorder(before_out))
    patched = _shrink(ctx, recorded, after_skip=False)
    shrunk_in: list = []
    patched.set_model_input_block_patch(input_recorder(shrunk_in))
    patched.set_model_output_block_patch(output_recorder(after_out))

    out = run(patched, sigma=sigma_end * 1.5)
    assert out.shape == (2, 4, 8, 8)
    (_, h1), (_, shrunk) = seen_in[1], shrunk_in[1]
    assert seen_in[1][0] == ("input", 1) and h1.shape[-2:] == (8, 8) and shrunk.shape[-2:] == (4, 4)
    torch.testing.assert_close(shrunk, F.interpolate(h1, size=(4, 4), mode="bicubic", align_corners=False))
    assert [h.shape[-1] for _, h in shrunk_in] == [8, 4, 2, 2]
    block, h_small, skip = before_out[3]  # meets the full-size conv_in skip with 4x4 features
    assert block == ("output", 3) and h_small.shape[-1] == 4 and skip.shape[-1] == 8
    torch.testing.assert_close(after_out[3][1], F.interpolate(h_small, size=(8, 8), mode="bicubic",
                                                              align_corners=False))

    seen_in.clear(), shrunk_in.clear()
    assert torch.equal(run(patched, sigma=sigma_end * 0.5), plain(model))  # outside the window: untouched
    assert [h.shape[-1] for _, h in shrunk_in] == [8, 8, 4, 4]


def test_deep_shrink_after_the_skip_keeps_the_full_size_skip(sd1: tuple, ctx: Any) -> None:
    model = sd1[0]
    before_out: list = []
    recorded = model.clone()
    recorded.set_model_output_block_patch(output_recorder(before_out))
    patched = _shrink(ctx, recorded, after_skip=True, downscale_method="area")
    out = run(patched, sigma=50.0)
    assert out.shape == (2, 4, 8, 8) and not torch.allclose(out, plain(model))
    sizes = [(h.shape[-1], skip.shape[-1]) for _, h, skip in before_out]
    # the shrunk path ends at 2x2; the upsampler of output block 1 scales to the skip it meets next (8x8),
    # as ComfyUI's output_shape does, so no block needs the deep-shrink resize
    assert sizes == [(2, 2), (2, 2), (8, 8), (8, 8)]


def test_deep_shrink_reads_a_patched_model_sampling(sd1: tuple, ctx: Any) -> None:
    class Never:
        def percent_to_sigma(self, percent: float) -> float:
            return -1.0  # an empty window

    model = sd1[0].clone()
    model.add_object_patch("model_sampling", Never())
    assert torch.equal(run(_shrink(ctx, model, after_skip=False), sigma=5.0), plain(model))


# ---- HyperTile -----------------------------------------------------------------------------------------------


def test_hypertile_cuts_queries_into_spatial_tiles_and_puts_them_back() -> None:
    patch = HyperTilePatch(tile_size=32, swap_size=1, max_depth=0, scale_depth=False)
    tokens = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 64, 1).expand(2, 64, 3).contiguous()
    extra = {"original_shape": [2, 4, 8, 8], "sigmas": torch.tensor([1.0])}
    q, k, v = patch.tile(tokens, tokens, tokens, extra)
    assert q.shape == (8, 16, 3) and k is tokens and v is tokens
    grid = tokens[..., 0].reshape(2, 8, 8)
    for b in range(2):
        for i in range(2):
            for j in range(2):
                expected = grid[b, i * 4:(i + 1) * 4, j * 4:(j + 1) * 4].reshape(-1)
                assert torch.equal(q[b * 4 + i * 2 + j, :, 0], expected)
    assert torch.equal(patch.untile(q, extra), tokens)
    small = tokens[:, :16]
    assert patch.tile(small, small, small, extra)[0] is small  # not the full resolution (max_depth 0)
    assert patch.untile(small, extra) is small


def _tiled_attention(heads: int, tiles: int) -> Callable:
    """HyperTile's self-attention as ComfyUI computes it, written out: the queries of spatial tile t attend over
    the t-th contiguous run of keys / values (ComfyUI splits k and v into q's batch by a plain view)."""
    def replace(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: dict) -> torch.Tensor:
        batch, tokens, inner = q.shape
        side = int(math.isqrt(tokens))
        d = inner // heads
        out = torch.empty_like(q)
        grid = torch.arange(tokens).reshape(side, side)
        half = side // 2
        for t in range(tiles):
            i, j = divmod(t, 2)
            where = grid[i * half:(i + 1) * half, j * half:(j + 1) * half].reshape(-1)
            run_ = slice(t * tokens // tiles, (t + 1) * tokens // tiles)
            qh = q[:, where].reshape(batch, -1, heads, d).transpose(1, 2)
            kh, vh = (x[:, run_].reshape(batch, -1, heads, d).transpose(1, 2) for x in (k, v))
            weights = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)
            out[:, where] = (weights @ vh).transpose(1, 2).reshape(batch, -1, inner)
        return out
    return replace


def test_hypertile_node_tiles_the_full_resolution_self_attention(sd1: tuple, ctx: Any) -> None:
    model = sd1[0]
    patched = call(HyperTile, ctx, model=model, tile_size=32, swap_size=1, max_depth=0, scale_depth=False)[0]
    shapes: list = []
    patched.set_model_attn1_patch(lambda n, c, v, e: shapes.append((e["block"], n.shape, c.shape)) or (n, c, v))
    out = run(patched)
    assert out.shape == (2, 4, 8, 8) and not torch.allclose(out, plain(model))
    full_size = (("input", 1), ("output", 2), ("output", 3))
    assert [block for block, _, _ in shapes] == [full_size[0], ("middle", 0), *full_size[1:]]
    for block, n, context in shapes:
        tiled = block in full_size
        assert n == ((8, 16, 32) if tiled else (2, 16, 64))  # 2 pictures x 4 tiles of 4x4 tokens
        assert context == ((2, 64, 32) if tiled else (2, 16, 64))  # keys and values stay whole

    reference = model.clone()
    for block in (("input", 1), ("output", 2), ("output", 3)):
        reference.set_model_attn1_replace(_tiled_attention(8, 4), *block)
    torch.testing.assert_close(out, run(reference), rtol=0, atol=1e-5)


def test_the_patches_keep_a_half_precision_unets_dtype(sd1: tuple, ctx: Any, tiny_tree: dict) -> None:
    from sdgraph.nodes.sd.hypernetwork import HypernetworkPatch
    from sdgraph.nodes.sd.token_merging import TomePatchModel

    model = call(FreeU_V2, ctx, model=sd1[0], b1=1.3, b2=1.4, s1=0.9, s2=0.2)[0]
    model = _shrink(ctx, model, after_skip=False, downscale_factor=1.5, downscale_method="bislerp")
    model = call(HyperTile, ctx, model=model, tile_size=32, swap_size=1, max_depth=0, scale_depth=False)[0]
    model = call(TomePatchModel, ctx, model=model, ratio=0.4)[0]
    g = torch.Generator().manual_seed(0)
    model.set_model_attn2_patch(HypernetworkPatch({64: tuple(((("linear", torch.randn(64, 64, generator=g) * 0.1,
                                                                torch.zeros(64)),),) * 2)}, 0.5))
    unet = copy.deepcopy(tiny_tree["sd1"].unet).to(torch.bfloat16)
    x = torch.randn(2, 4, 8, 8, generator=g).to(torch.bfloat16)
    context = torch.randn(2, 77, 64, generator=g).to(torch.bfloat16)
    options = {**model.model_options["transformer_options"], "cond_or_uncond": [1, 0],
               "sigmas": torch.full((2,), 5.0)}
    with torch.inference_mode():
        out = patched_unet(unet, x, torch.tensor([500.0]), context, options)
    assert out.dtype == torch.bfloat16 and out.shape == (2, 4, 8, 8) and torch.isfinite(out).all()


def test_freeu_v2_leaves_constant_feature_maps_alone() -> None:
    h, skip = torch.randn(1, 16, 1, 1), torch.randn(1, 16, 1, 1)
    new_h, _ = freeu_patch(8, b1=1.0, b2=1.8, s1=1.0, s2=1.0, v2=True)(h.clone(), skip, {})
    assert torch.equal(new_h, h)  # ComfyUI: 0 / 0, NaN
