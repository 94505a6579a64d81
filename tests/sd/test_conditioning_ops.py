"""The conditioning nodes and what the sampler makes of their keys: averages and concatenations computed by
hand, areas in percent against the pixel areas they denote, mask bounds, mask strength, the edge fade, area
twins, step windows (on the analytic Gaussian-data model, whose predictions are exact) and SDXL's size ids."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from conftest import call
from sdgraph.context import InterruptFlag, NodeContext, Services
from sdgraph.node import define
from sampling_support import GaussianDataUNet, TinyModel, mean_conditioning, text, tiny_unet
from sdgraph.nodes.sd import cond_areas
from sdgraph.nodes.sd.conditioning import ConditioningSetArea, TextEncode
from sdgraph.nodes.sd.conditioning_ops import (
    CLIPTextEncodeSDXL, ConditioningAverage, ConditioningConcat, ConditioningSetAreaPercentage,
    ConditioningSetAreaStrength, ConditioningSetMask, ConditioningSetTimestepRange,
)
from sdgraph.nodes.sd.controlnet_options import SetUnionControlNetType
from sdgraph.nodes.sd.denoiser import SDDenoiser
from sdgraph.nodes.sd.model_objects import sd_alphas_cumprod
from sdgraph.nodes.sd.sampling import KSampler, KSamplerAdvanced
from sdgraph.nodes.sd.schedules import compute_sigmas, schedule_of


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from threads; on a shared CPU they only spin
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def unet_model() -> TinyModel:
    return TinyModel(tiny_unet(3))


@pytest.fixture(scope="module")
def gauss() -> TinyModel:
    alphas = sd_alphas_cumprod()
    return TinyModel(GaussianDataUNet(alphas), alphas_cumprod=alphas)


# ---- nodes that edit the tensors -----------------------------------------------------------------------------


def test_average_is_the_lerp_by_hand_with_tokens_cut_or_padded(ctx):
    to = [[randn(1, 154, 8, seed=1), {"pooled_output": randn(1, 4, seed=2), "width": 640}]]
    short = [[randn(1, 77, 8, seed=3), {"pooled_output": randn(1, 4, seed=4)}]]
    long = [[randn(1, 231, 8, seed=5), {}]]
    s = 0.3
    ((cond, extras),) = call(ConditioningAverage, ctx, conditioning_to=to, conditioning_from=short,
                             conditioning_to_strength=s)[0]
    t, f = to[0][0], short[0][0]
    expected = t.clone()
    for i in range(154):
        expected[0, i] = s * t[0, i] + (1 - s) * (f[0, i] if i < 77 else torch.zeros(8))
    torch.testing.assert_close(cond, expected, rtol=0, atol=1e-6)
    pooled = s * to[0][1]["pooled_output"] + (1 - s) * short[0][1]["pooled_output"]
    torch.testing.assert_close(extras["pooled_output"], pooled, rtol=0, atol=1e-6)
    assert extras["width"] == 640 and "pooled_output" in to[0][1] and to[0][1]["pooled_output"] is not pooled
    ((cut, cut_extras),) = call(ConditioningAverage, ctx, conditioning_to=to, conditioning_from=long,
                                conditioning_to_strength=s)[0]
    torch.testing.assert_close(cut, s * t + (1 - s) * long[0][0][:, :154], rtol=0, atol=1e-6)
    assert torch.equal(cut_extras["pooled_output"], to[0][1]["pooled_output"]), "no pooled to blend with"
    # conditioning_to without a pooled output takes conditioning_from's (blended with itself, as ComfyUI does)
    ((_, taken),) = call(ConditioningAverage, ctx, conditioning_to=long, conditioning_from=short,
                         conditioning_to_strength=s)[0]
    torch.testing.assert_close(taken["pooled_output"], short[0][1]["pooled_output"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="conditioning_from: the conditioning is empty"):
        call(ConditioningAverage, ctx, conditioning_to=to, conditioning_from=[], conditioning_to_strength=s)


def test_concat_joins_the_tokens(ctx):
    to = [[randn(1, 77, 8, seed=1), {"strength": 2.0}], [randn(1, 154, 8, seed=2), {}]]
    other = [[randn(1, 77, 8, seed=3), {}], [randn(1, 77, 8, seed=4), {}]]
    out = call(ConditioningConcat, ctx, conditioning_to=to, conditioning_from=other)[0]
    assert [c.shape[1] for c, _ in out] == [154, 231]
    for (cond, extras), (original, meta) in zip(out, to):
        assert torch.equal(cond[:, :original.shape[1]], original)
        assert torch.equal(cond[:, original.shape[1]:], other[0][0]), "only the first entry of conditioning_from"
        assert extras == meta and extras is not meta
    with pytest.raises(ValueError, match="ConditioningConcat.conditioning_from: token width 4 differs"):
        call(ConditioningConcat, ctx, conditioning_to=to, conditioning_from=[[randn(1, 77, 4), {}]])


def test_set_nodes_record_comfyui_keys(ctx):
    cond = [[randn(1, 77, 8), {"pooled_output": randn(1, 4)}]]
    (pct,) = call(ConditioningSetAreaPercentage, ctx, conditioning=cond, width=0.25, height=0.5, x=0.5, y=0.125,
                  strength=1.5)
    assert pct[0][1]["area"] == ("percentage", 0.5, 0.25, 0.125, 0.5) and pct[0][1]["strength"] == 1.5
    assert pct[0][1]["set_area_to_bounds"] is False and "area" not in cond[0][1]
    (strong,) = call(ConditioningSetAreaStrength, ctx, conditioning=cond, strength=3.0)
    assert strong[0][1]["strength"] == 3.0
    (ranged,) = call(ConditioningSetTimestepRange, ctx, conditioning=cond, start=0.2, end=0.7)
    assert (ranged[0][1]["start_percent"], ranged[0][1]["end_percent"]) == (0.2, 0.7)
    mask = torch.rand(16, 16)
    (masked,) = call(ConditioningSetMask, ctx, conditioning=cond, mask=mask, strength=0.5, set_cond_area="mask bounds")
    extras = masked[0][1]
    assert extras["mask"].shape == (1, 16, 16) and extras["mask_strength"] == 0.5 and extras["set_area_to_bounds"]
    with pytest.raises(ValueError, match="ConditioningSetMask.mask"):
        call(ConditioningSetMask, ctx, conditioning=cond, mask=torch.rand(1, 1, 1, 4, 4), strength=1.0,
             set_cond_area="default")


# ---- areas and masks at sampling time --------------------------------------------------------------------------


def test_percentages_resolve_as_comfyui_rounds_them():
    assert cond_areas.resolve_area(("percentage", 0.3, 0.3125, 0.1, 0.0), 8, 8) == (2, 2, 1, 0)  # 2.4, 2.5 -> 2
    assert cond_areas.resolve_area(("percentage", 0.01, 1.0, 0.5, 0.9), 8, 16) == (1, 16, 4, 14)  # size >= 1
    assert cond_areas.resolve_area([4, 4, 2, 2], 8, 8) == (4, 4, 2, 2)
    with pytest.raises(ValueError, match="area"):
        cond_areas.resolve_area((1, 2, 3), 8, 8)


def test_percentage_area_samples_as_the_pixel_area_it_denotes(ctx, unet_model):
    base = [[text(1), {}]]
    area = [[text(5), {}]]
    (pct,) = call(ConditioningSetAreaPercentage, ctx, conditioning=area, width=0.25, height=0.5, x=0.5, y=0.25,
                  strength=2.0)
    # a 16x16 latent is 128x128 pixels: 25% wide at 50% = 32 px at x 64; 50% high at 25% = 64 px at y 32
    (pixels,) = call(ConditioningSetArea, ctx, conditioning=area, width=32, height=64, x=64, y=32, strength=2.0)
    x, latent = randn(1, 4, 16, 16, seed=9) * 3, torch.zeros(1, 4, 16, 16)
    with torch.inference_mode():
        by_percent = SDDenoiser(unet_model, base + pct, [[text(2), {}]], 4.0, latent)
        by_pixels = SDDenoiser(unet_model, base + pixels, [[text(2), {}]], 4.0, latent)
        assert by_percent.positive[1].area == by_pixels.positive[1].area == (8, 4, 4, 8)
        assert torch.equal(by_percent(x, 3.0), by_pixels(x, 3.0))
        plain = SDDenoiser(unet_model, base, [[text(2), {}]], 4.0, latent)(x, 3.0)
        assert (by_percent(x, 3.0) - plain).abs().max() > 1e-3


def test_area_weight_fades_towards_inner_edges_only():
    weight = cond_areas.entry_weight({"area": (16, 16, 8, 0), "strength": 2.0}, 32, 32, torch.device("cpu"))
    ramp = torch.tensor([0.25, 0.5, 0.75] + [1.0] * 10 + [0.75, 0.5, 0.25])  # rr = 16 // 4 = 4
    rows = ramp  # both vertical edges are inside the latent
    cols = torch.tensor([1.0] * 13 + [0.75, 0.5, 0.25])  # the left edge is the latent's own: no fade there
    torch.testing.assert_close(weight[0, 0], 2.0 * rows[:, None] * cols[None, :], rtol=0, atol=1e-6)
    full = cond_areas.entry_weight({"area": (32, 32, 0, 0)}, 32, 32, torch.device("cpu"))
    assert torch.equal(full, torch.ones(1, 1, 32, 32))


def test_mask_strength_and_strength_multiply_the_mask_without_fade():
    mask = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    extras = {"area": (8, 8, 4, 4), "mask": mask, "mask_strength": 0.5, "strength": 3.0}
    weight = cond_areas.entry_weight(extras, 16, 16, torch.device("cpu"))
    torch.testing.assert_close(weight, mask[:, :, 4:12, 4:12] * 0.5 * 3.0, rtol=0, atol=1e-6)


def test_mask_bounds_crop_to_the_masks_box(ctx, unet_model):
    mask = torch.zeros(1, 16, 16)
    mask[0, 3:13, 5:8] = 0.7  # rows 3..12, columns 5..7 (3 wide: the box grows to 8)
    assert cond_areas.mask_bounds(mask[:, None]) == (10, 8, 3, 5)
    assert cond_areas.mask_bounds(torch.zeros(2, 1, 16, 16)) == (8, 8, 0, 0)
    two = torch.zeros(2, 16, 16)
    two[0, 0, 0], two[1, 15, 15] = 1.0, -0.5  # the box holds every item's nonzero pixels
    assert cond_areas.mask_bounds(two[:, None]) == (16, 16, 0, 0)
    area = [[text(5), {}]]
    (bounded,) = call(ConditioningSetMask, ctx, conditioning=area, mask=mask, strength=1.0,
                      set_cond_area="mask bounds")
    (default,) = call(ConditioningSetMask, ctx, conditioning=area, mask=mask, strength=1.0, set_cond_area="default")
    explicit = [[text(5), {"area": (10, 8, 3, 5), "mask": mask}]]
    x, latent = randn(1, 4, 16, 16, seed=9) * 3, torch.zeros(1, 4, 16, 16)
    shapes: list[tuple[int, int]] = []
    hook = unet_model.module.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape[-2:])))
    try:
        with torch.inference_mode():
            out = {name: SDDenoiser(unet_model, [[text(1), {}]] + cond, [], 1.0, latent)(x, 3.0)
                   for name, cond in (("bounds", bounded), ("default", default), ("explicit", explicit))}
    finally:
        hook.remove()
    assert shapes == [(16, 16), (10, 8), (16, 16), (16, 16), (16, 16), (10, 8)]
    assert torch.equal(out["bounds"], out["explicit"])
    assert (out["bounds"] - out["default"]).abs().max() > 1e-4


def test_area_entries_get_twins_on_the_other_side():
    pos_area = [text(1), {"area": (4, 4, 0, 0), "strength": 2.0, "start_percent": 0.1, "pooled_output": 1}]
    neg_full, neg_big = [text(2), {"pooled_output": 2}], [text(3), {"area": (8, 8, 0, 0), "pooled_output": 3}]
    positive, negative = [[text(0), {}], pos_area], [neg_full, neg_big]
    cond_areas.add_area_twins([positive, negative])
    twin = negative[-1]
    assert len(negative) == 3 and twin[0] is neg_big[0], "the smallest negative area holding the positive's"
    assert twin[1] == {"area": (4, 4, 0, 0), "strength": 2.0, "start_percent": 0.1, "pooled_output": 3}
    assert len(positive) == 3 and positive[-1][1]["area"] == (8, 8, 0, 0), "and the negative's area its own twin"
    same = [[text(0), {"area": (4, 4, 0, 0)}]], [[text(1), {"area": (4, 4, 0, 0)}]]
    cond_areas.add_area_twins(list(same))
    assert len(same[0]) == len(same[1]) == 1, "an equal area on the other side needs no twin"


def test_outside_every_area_the_estimate_is_zero(unet_model):
    left = [[text(5), {"area": (16, 8, 0, 0)}]]
    x, latent = randn(1, 4, 16, 16, seed=9) * 3, torch.zeros(1, 4, 16, 16)
    with torch.inference_mode():
        denoised = SDDenoiser(unet_model, left, [], 1.0, latent)(x, 3.0)
    assert denoised[..., 8:].abs().max() < 1e-5
    assert denoised[..., :8].abs().min() > 0


# ---- step windows ----------------------------------------------------------------------------------------------


def ranged(mean: tuple[float, ...], start: float, end: float) -> list:
    return [[c, {**e, "start_percent": start, "end_percent": end}] for c, e in mean_conditioning(mean)]


A, B, NEG = (1.0, -1.0, 0.5, 0.0), (-0.5, 0.5, 1.0, 2.0), (0.0, 0.0, 0.0, 0.0)


def test_a_ranged_entry_acts_only_inside_its_window_step_by_step(gauss):
    first, second = ranged(A, 0.0, 0.5), ranged(B, 0.5, 1.0)
    latent = torch.zeros(1, 4, 8, 8)
    x = randn(1, 4, 8, 8, seed=3)
    boundary = cond_areas.percent_sigma(schedule_of(gauss.alphas_cumprod), 0.5)
    with torch.inference_mode():
        both = SDDenoiser(gauss, first + second, mean_conditioning(NEG), 3.0, latent)
        only_a = SDDenoiser(gauss, mean_conditioning(A), mean_conditioning(NEG), 3.0, latent)
        only_b = SDDenoiser(gauss, mean_conditioning(B), mean_conditioning(NEG), 3.0, latent)
        sigmas = compute_sigmas(schedule_of(gauss.alphas_cumprod), "karras", 10)[:-1].tolist()
        assert sum(s > boundary for s in sigmas) == 5  # steps 0..4 in the first half, 5..9 in the second
        for i, sigma in enumerate(sigmas):
            alone = only_a if sigma > boundary else only_b
            torch.testing.assert_close(both(x * sigma, sigma), alone(x * sigma, sigma), rtol=0, atol=1e-6,
                                       msg=f"step {i} (sigma {sigma})")
        # at the boundary sigma itself both act (ComfyUI skips only above the start / below the end)
        one = SDDenoiser(gauss, first + second, [], 1.0, latent)
        alone_a, alone_b = (SDDenoiser(gauss, mean_conditioning(m), [], 1.0, latent) for m in (A, B))
        at = torch.tensor(boundary, dtype=torch.float32)
        above = float(torch.nextafter(at, torch.tensor(float("inf"))))
        below = float(torch.nextafter(at, torch.tensor(0.0)))
        torch.testing.assert_close(one(x, boundary), (alone_a(x, boundary) + alone_b(x, boundary)) / 2,
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(one(x, above), alone_a(x, above), rtol=0, atol=1e-6)
        near = boundary * (1 + 1e-9)  # the same sigma in float32, where ComfyUI's sigmas live
        torch.testing.assert_close(one(x, near), (alone_a(x, near) + alone_b(x, near)) / 2, rtol=0, atol=1e-6)
        torch.testing.assert_close(one(x, below), alone_b(x, below), rtol=0, atol=1e-6)
        # a step no entry covers estimates 0 on that side
        gap = SDDenoiser(gauss, ranged(A, 0.0, 0.2) + ranged(B, 0.8, 1.0), [], 1.0, latent)
        assert gap(x, boundary).abs().max() < 1e-5


def test_ranged_sampling_equals_running_each_part_alone(gauss):
    def run(cls: type, **inputs: Any) -> torch.Tensor:
        base = dict(model=gauss, cfg=3.0, sampler_name="euler", scheduler="karras", steps=10,
                    negative=mean_conditioning(NEG), latent_image={"samples": torch.zeros(1, 4, 8, 8)})
        base.update(inputs)
        ctx = NodeContext(node_id="1", prompt_id="p", services=Services(settings={}), interrupt=InterruptFlag())
        return define(cls, "sd-sampling").invoke(base, ctx)[0]

    both = ranged(A, 0.0, 0.5) + ranged(B, 0.5, 1.0)
    whole = run(KSampler, seed=7, positive=both, denoise=1.0)["samples"]
    common = dict(noise_seed=7, end_at_step=10000)
    half = run(KSamplerAdvanced, add_noise="enable", positive=mean_conditioning(A), start_at_step=0,
               **{**common, "end_at_step": 5}, return_with_leftover_noise="enable")
    rest = run(KSamplerAdvanced, add_noise="disable", positive=mean_conditioning(B), start_at_step=5,
               latent_image=half, return_with_leftover_noise="disable", **common)["samples"]
    torch.testing.assert_close(whole, rest, rtol=0, atol=1e-5)
    only_a = run(KSampler, seed=7, positive=mean_conditioning(A), denoise=1.0)["samples"]
    assert (whole - only_a).abs().max() > 1e-2


# ---- SDXL's two prompts and size ids --------------------------------------------------------------------------


def test_sdxl_encoder_takes_each_prompt_and_its_sizes_reach_the_time_ids(ctx, sdxl, sd1):
    model, clip, _ = sdxl
    text_l, text_g = "a red circle", " ".join(["a blue square on a green field"] * 12)  # text_g: two chunks
    ((cond, extras),) = call(CLIPTextEncodeSDXL, ctx, clip=clip, width=832, height=1216, crop_w=16, crop_h=32,
                             target_width=640, target_height=768, text_g=text_g, text_l=text_l)[0]
    ((l_alone, _),) = call(TextEncode, ctx, text=text_l, clip=clip)[0]
    ((g_alone, g_extras),) = call(TextEncode, ctx, text=text_g, clip=clip)[0]
    ((empty, _),) = call(TextEncode, ctx, text="", clip=clip)[0]
    assert cond.shape == (1, 154, 128)
    assert torch.equal(cond[:, :77, :64], l_alone[:, :, :64]) and torch.equal(cond[:, 77:, :64], empty[:, :, :64])
    assert torch.equal(cond[..., 64:], g_alone[..., 64:])
    assert torch.equal(extras["pooled_output"], g_extras["pooled_output"])
    seen: list[torch.Tensor] = []
    unet = model.unet()
    hook = unet.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["added_cond_kwargs"]["time_ids"].clone()), with_kwargs=True)
    negative = call(TextEncode, ctx, text="", clip=clip)[0]
    try:
        with torch.inference_mode():
            SDDenoiser(model, [[cond, extras]], negative, 5.0, torch.zeros(1, 4, 8, 8))(torch.zeros(1, 4, 8, 8), 1.0)
    finally:
        hook.remove()
    (ids,) = seen
    assert ids.tolist() == [[64, 64, 0, 0, 64, 64], [1216, 832, 32, 16, 768, 640]]  # [uncond; cond]
    with pytest.raises(ValueError, match="CLIPTextEncodeSDXL.clip"):
        call(CLIPTextEncodeSDXL, ctx, clip=sd1[1], width=1, height=1, crop_w=0, crop_h=0,
             target_width=1, target_height=1, text_g="a", text_l="b")


# ---- ControlNet-Union type ---------------------------------------------------------------------------------------


def test_union_type_is_recorded_on_a_copy(ctx):
    from sdgraph.nodes.sd.loaders import ControlNetLoader

    (net,) = call(ControlNetLoader, ctx, control_net_name="tiny-controlnet")
    (depth,) = call(SetUnionControlNetType, ctx, control_net=net, type="depth")
    (repaint,) = call(SetUnionControlNetType, ctx, control_net=depth, type="repaint")
    (auto,) = call(SetUnionControlNetType, ctx, control_net=repaint, type="auto")
    assert depth.extra_args == {"control_type": [1]} and repaint.extra_args == {"control_type": [7]}
    assert auto.extra_args == {"control_type": []} and net.extra_args == {}
    assert depth.slot is net.slot, "the same weights"
    with pytest.raises(ValueError, match="SetUnionControlNetType.control_net"):
        call(SetUnionControlNetType, ctx, control_net="nope", type="auto")
