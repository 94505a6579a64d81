"""The latent operations (nodes/sd/latent_ops.py): ComfyUI's specs, what each computes on small tensors, how
noise_mask and batch_index travel, and LatentFromBatch's items sampling as they do in their whole batch."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from comfy_specs import assert_specs_match
from conftest import call
from sampling_support import TinyModel, conditioning, empty_latent, tiny_unet
from sdgraph.context import InterruptFlag, NodeContext, Services
from sdgraph.limits import BudgetExceeded, Limits
from sdgraph.node import define
from sdgraph.nodes.sd import latent_ops as lo
from sdgraph.nodes.sd.sampling import KSampler
from sdgraph.paths import Dirs
from sdgraph.runtime import RuntimeOptions, create_executor

NAMES = ["LatentComposite", "LatentCompositeMasked", "LatentBlend", "LatentAdd", "LatentSubtract", "LatentMultiply",
         "LatentInterpolate", "LatentBatch", "LatentFromBatch", "RepeatLatentBatch", "LatentCrop", "LatentFlip",
         "LatentRotate"]


def test_specs_are_comfyuis(tmp_path: Path):
    executor = create_executor(RuntimeOptions(base_dir=tmp_path, plugins=False))
    assert_specs_match(executor.registry.describe(Dirs(base=tmp_path, extra_model_roots=[])), NAMES)


def lat(samples: torch.Tensor, **extra) -> dict:
    return {"samples": samples, **extra}


def test_latent_composite_pastes_at_x_over_8_with_comfyuis_feather():
    to, src = torch.zeros(1, 4, 6, 6), torch.ones(1, 4, 3, 3)
    (plain,) = lo.LatentComposite().run(samples_to=lat(to), samples_from=lat(src), x=16, y=15, feather=0)
    want = torch.zeros(1, 4, 6, 6)
    want[..., 1:4, 2:5] = 1  # y 15 // 8 = 1, x 16 // 8 = 2
    assert torch.equal(plain["samples"], want) and not to.any()
    (soft,) = lo.LatentComposite().run(samples_to=lat(to), samples_from=lat(src), x=16, y=8, feather=16)
    ramp = torch.tensor([0.5, 1.0, 0.5])  # feather 2: the first and last rows/columns at 1/2 (all edges inside)
    want[..., 1:4, 2:5] = ramp[:, None] * ramp[None, :]
    assert torch.allclose(soft["samples"], want)
    (corner,) = lo.LatentComposite().run(samples_to=lat(to), samples_from=lat(src), x=0, y=0, feather=16)
    edge = torch.tensor([1.0, 1.0, 0.5])  # the edges on the destination's border are not feathered
    assert torch.allclose(corner["samples"][0, 0, :3, :3], edge[:, None] * edge[None, :])
    (clipped,) = lo.LatentComposite().run(samples_to=lat(to, noise_mask=torch.ones(1, 1, 6, 6)),
                                         samples_from=lat(src * 2), x=40, y=0, feather=0)
    assert clipped["samples"][..., :3, 5].eq(2).all() and clipped["samples"].sum() == 2 * 4 * 3
    assert "noise_mask" in clipped  # samples_to's dict travels on
    with pytest.raises(ValueError, match="LatentComposite.samples_from"):
        lo.LatentComposite().run(samples_to=lat(torch.zeros(2, 4, 6, 6)), samples_from=lat(torch.ones(3, 4, 2, 2)),
                                 x=0, y=0, feather=0)


def test_latent_composite_masked():
    dst, src = torch.zeros(2, 4, 4, 4), torch.full((1, 4, 2, 2), 3.0)
    (out,) = lo.LatentCompositeMasked().run(destination=lat(dst), source=lat(src), x=8, y=16, resize_source=False)
    want = torch.zeros(2, 4, 4, 4)
    want[..., 2:4, 1:3] = 3
    assert torch.equal(out["samples"], want)
    mask = torch.zeros(4, 4)
    mask[:2, :2] = 1  # bilinearly halved to the source's 2x2: [[1, 0], [0, 0]]
    (masked,) = lo.LatentCompositeMasked().run(destination=lat(dst), source=lat(src), x=0, y=0,
                                               resize_source=False, mask=mask)
    want = torch.zeros(2, 4, 4, 4)
    want[..., 0, 0] = 3
    assert torch.equal(masked["samples"], want)
    (resized,) = lo.LatentCompositeMasked().run(destination=lat(dst), source=lat(src), x=0, y=0,
                                                resize_source=True)
    assert resized["samples"].eq(3).all()


def test_blend_add_subtract_multiply():
    a = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    b = torch.full((1, 4, 8, 8), 2.0)  # another size: bicubic to a's size, still 2 everywhere
    (blend,) = lo.LatentBlend().run(samples1=lat(a, noise_mask=torch.ones(1)), samples2=lat(b), blend_factor=0.25)
    assert torch.allclose(blend["samples"], a * 0.25 + 2.0 * 0.75) and "noise_mask" in blend
    ramp = torch.arange(8.0).expand(1, 4, 4, 8)  # 4x8 -> 4x4: the centre crop keeps columns 2..5
    (added,) = lo.LatentAdd().run(samples1=lat(a), samples2=lat(ramp))
    assert torch.allclose(added["samples"], a + torch.tensor([2.0, 3.0, 4.0, 5.0]))
    (sub,) = lo.LatentSubtract().run(samples1=lat(a, batch_index=[4, 5]), samples2=lat(a[:1]))
    assert torch.equal(sub["samples"][0], torch.zeros(4, 4, 4)) and torch.equal(sub["samples"][1], a[1] - a[0])
    assert sub["batch_index"] == [4, 5]
    (times,) = lo.LatentMultiply().run(samples=lat(a), multiplier=-1.5)
    assert torch.equal(times["samples"], a * -1.5)
    with pytest.raises(ValueError, match="LatentAdd.samples2.*channels"):
        lo.LatentAdd().run(samples1=lat(a), samples2=lat(torch.ones(1, 3, 4, 4)))


def test_latent_interpolate_blends_direction_and_length():
    a = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)  # length 5
    b = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1)  # length 2
    (half,) = lo.LatentInterpolate().run(samples1=lat(a), samples2=lat(b), ratio=0.5)
    mixed = (0.5 * 0.6 + 0.5 * 0.0, 0.5 * 0.8 + 0.5 * 1.0)
    norm = math.hypot(*mixed)
    want = torch.tensor([mixed[0] / norm * 3.5, mixed[1] / norm * 3.5]).view(1, 2, 1, 1)
    assert torch.allclose(half["samples"], want)
    (ones,) = lo.LatentInterpolate().run(samples1=lat(a), samples2=lat(b), ratio=1.0)
    assert torch.allclose(ones["samples"], a)
    pair = torch.cat([a, 10 * b])  # each item uses its own norms
    (both,) = lo.LatentInterpolate().run(samples1=lat(pair), samples2=lat(pair.flip(0)), ratio=1.0)
    assert torch.allclose(both["samples"], pair)
    (zero,) = lo.LatentInterpolate().run(samples1=lat(torch.zeros(1, 2, 1, 1)), samples2=lat(b), ratio=0.5)
    assert torch.isfinite(zero["samples"]).all()


def test_latent_batch_and_its_indices():
    a, b = torch.zeros(1, 4, 2, 2), torch.ones(2, 4, 4, 4)
    (out,) = lo.LatentBatch().run(samples1=lat(a, noise_mask=torch.ones(1, 1, 2, 2)), samples2=lat(b, batch_index=[5, 6]))
    assert out["samples"].shape == (3, 4, 2, 2) and torch.equal(out["samples"][1:], torch.ones(2, 4, 2, 2))
    assert out["batch_index"] == [0, 5, 6] and out["noise_mask"].shape == (1, 1, 2, 2)


def test_latent_from_batch_cuts_and_keeps_indices_and_masks():
    s = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 4, 2, 2)
    masks = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)])
    (out,) = lo.LatentFromBatch().run(samples=lat(s, noise_mask=masks), batch_index=2, length=5)
    assert out["samples"][:, 0, 0, 0].tolist() == [2.0, 3.0] and out["batch_index"] == [2, 3]
    assert torch.equal(out["noise_mask"], masks)  # the 2 masks cycle over the 4 items: items 2, 3 get 0, 1
    (last,) = lo.LatentFromBatch().run(samples=lat(s, batch_index=[7, 8, 9, 10]), batch_index=63, length=1)
    assert last["samples"][:, 0, 0, 0].tolist() == [3.0] and last["batch_index"] == [10]
    one = torch.ones(1, 1, 2, 2)
    (kept,) = lo.LatentFromBatch().run(samples=lat(s, noise_mask=one), batch_index=1, length=2)
    assert torch.equal(kept["noise_mask"], one)


def test_repeat_latent_batch(ctx):
    s = torch.randn(2, 4, 2, 2)
    (out,) = call(lo.RepeatLatentBatch, ctx, samples=lat(s, batch_index=[2, 3], noise_mask=torch.rand(2, 1, 2, 2)),
                  amount=3)
    assert torch.equal(out["samples"], torch.cat([s, s, s])) and out["batch_index"] == [2, 3, 4, 5, 6, 7]
    assert out["noise_mask"].shape == (6, 1, 2, 2)
    (single,) = call(lo.RepeatLatentBatch, ctx, samples=lat(s, noise_mask=torch.rand(1, 1, 2, 2)), amount=2)
    assert single["noise_mask"].shape == (1, 1, 2, 2) and "batch_index" not in single
    ctx.services.limits = Limits(memory_bytes=2 * 4 * 2 * 2 * 4 * 10)
    with pytest.raises(BudgetExceeded, match=r"RepeatLatentBatch\.amount.*22x4x2x2"):
        call(lo.RepeatLatentBatch, ctx, samples=lat(s), amount=11)


def test_crop_flip_rotate():
    s = torch.arange(256.0).view(1, 1, 16, 16).expand(1, 4, 16, 16)
    (crop,) = lo.LatentCrop().run(samples=lat(s), width=64, height=80, x=24, y=200)
    assert torch.equal(crop["samples"], s[..., 8:16, 3:11])  # y is kept 8 latent rows inside; 10 rows cut to 8
    grid = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    flip = lambda how: lo.LatentFlip().run(samples=lat(grid), flip_method=how)[0]["samples"][0, 0].tolist()
    assert flip("x-axis: vertically") == [[3, 4], [1, 2]] and flip("y-axis: horizontally") == [[2, 1], [4, 3]]
    turn = lambda how: lo.LatentRotate().run(samples=lat(grid), rotation=how)[0]["samples"][0, 0].tolist()
    assert turn("none") == [[1, 2], [3, 4]] and turn("90 degrees") == [[3, 1], [4, 2]]  # clockwise
    assert turn("180 degrees") == [[4, 3], [2, 1]] and turn("270 degrees") == [[2, 4], [1, 3]]
    with pytest.raises(ValueError, match="LatentRotate.rotation"):
        turn("45 degrees")


def _sample(model, latent: dict) -> torch.Tensor:
    ctx = NodeContext(node_id="3", prompt_id="p", services=Services(), interrupt=InterruptFlag())
    inputs = dict(model=model, seed=11, steps=3, cfg=5.0, sampler_name="euler", scheduler="normal",
                  positive=conditioning(1), negative=conditioning(2), latent_image=latent, denoise=1.0)
    return define(KSampler, "sd-sampling").invoke(inputs, ctx)[0]["samples"]


def test_an_item_from_a_batch_samples_as_in_the_batch():
    model = TinyModel(tiny_unet())
    batch = empty_latent(batch=4)
    whole = _sample(model, batch)
    for k in (1, 3):
        (item,) = lo.LatentFromBatch().run(samples=batch, batch_index=k, length=1)
        # equal up to float noise: a batched convolution sums in another order than a single one
        torch.testing.assert_close(_sample(model, item), whole[k:k + 1], atol=2e-3, rtol=1e-3)
    (item,) = lo.LatentFromBatch().run(samples=batch, batch_index=3, length=1)
    unindexed = _sample(model, {"samples": item["samples"]})  # without its batch_index it gets item 0's noise
    assert (unindexed - whole[3:4]).abs().max() > 0.5
    torch.testing.assert_close(unindexed, whole[:1], atol=2e-3, rtol=1e-3)
