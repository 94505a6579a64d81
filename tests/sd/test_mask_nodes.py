"""The mask nodes (nodes/sd/mask_nodes.py): ComfyUI's specs, and what each computes on small tensors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from comfy_specs import assert_specs_match
from conftest import call
from sdgraph.limits import BudgetExceeded, Limits, configure
from sdgraph.nodes.sd import mask_nodes as m
from sdgraph.paths import Dirs
from sdgraph.runtime import RuntimeOptions, create_executor

NAMES = ["SolidMask", "InvertMask", "MaskComposite", "GrowMask", "FeatherMask", "CropMask", "ThresholdMask",
         "ImageToMask", "MaskToImage", "ImageColorToMask", "JoinImageWithAlpha", "SplitImageWithAlpha"]


@pytest.fixture(scope="module")
def described(tmp_path_factory) -> dict:
    base = Path(tmp_path_factory.mktemp("specs"))
    executor = create_executor(RuntimeOptions(base_dir=base, plugins=False))
    return executor.registry.describe(Dirs(base=base, extra_model_roots=[]))


def test_specs_are_comfyuis(described):
    assert_specs_match(described, NAMES)


def test_solid_mask_and_its_budget(ctx):
    (out,) = call(m.SolidMask, ctx, value=0.25, width=3, height=2)
    assert out.shape == (1, 2, 3) and out.dtype == torch.float32 and torch.all(out == 0.25)
    ctx.services.limits = Limits(memory_bytes=1000)
    with pytest.raises(BudgetExceeded, match=r"SolidMask\.width.*1x100x100"):
        call(m.SolidMask, ctx, value=1.0, width=100, height=100)
    configure(Limits(memory_bytes=10 ** 6))  # the budget validation reads
    try:
        problem = m.SolidMask.validate_inputs(ctx.dirs, value=1.0, width=16384, height=16384)
        assert m.SolidMask.validate_inputs(ctx.dirs, value=1.0, width=64, height=64) is None
    finally:
        configure(Limits())
    assert problem is not None and "SolidMask.width" in problem and "--max-tensor-mb" in problem


def test_invert_and_threshold():
    mask = torch.tensor([[[0.0, 0.25], [0.5, 1.0]]])
    (inv,) = m.InvertMask().run(mask=mask)
    assert torch.equal(inv, torch.tensor([[[1.0, 0.75], [0.5, 0.0]]]))
    (th,) = m.ThresholdMask().run(mask=mask, value=0.5)
    assert torch.equal(th, torch.tensor([[[0.0, 0.0], [0.0, 1.0]]]))  # strictly above


def _composite(op: str, dst: torch.Tensor, src: torch.Tensor, x: int = 0, y: int = 0) -> torch.Tensor:
    return m.MaskComposite().run(destination=dst, source=src, x=x, y=y, operation=op)[0]


def test_mask_composite_every_operation_at_an_offset():
    dst = torch.tensor([[[0.2, 0.6, 0.9], [0.5, 1.0, 0.0], [0.7, 0.4, 0.8]]])
    src = torch.tensor([[[0.5, 0.7], [0.6, 0.49]]])
    # the source's top-left lands on (1, 1): only dst[1:, 1:] changes, with src[:2, :2]
    expected = {
        "multiply": [[1.0 * 0.5, 0.0 * 0.7], [0.4 * 0.6, 0.8 * 0.49]],
        "add": [[1.0, 0.7], [1.0, 1.0]],  # 1.5, 1.0, 1.29 clamped to 1
        "subtract": [[0.5, 0.0], [0.0, 0.8 - 0.49]],  # -0.7 and -0.2 clamped to 0
        # rounded: dst [[1, 0], [0, 1]], src [[0 (0.5 rounds to even), 1], [1, 0]]
        "and": [[0.0, 0.0], [0.0, 0.0]],
        "or": [[1.0, 1.0], [1.0, 1.0]],
        "xor": [[1.0, 1.0], [1.0, 1.0]],
    }
    for op, inner in expected.items():
        out = _composite(op, dst, src, x=1, y=1)
        want = dst.clone()
        want[0, 1:, 1:] = torch.tensor(inner)
        assert torch.allclose(out, want, atol=1e-6), op
    assert torch.equal(_composite("and", torch.ones(1, 2, 2), torch.tensor([[[1.0, 0.0], [0.51, 0.5]]])),
                       torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]))


def test_mask_composite_clamps_all_clips_and_checks_batches():
    dst = torch.tensor([[[1.5, -0.5], [0.5, 0.5]]])
    out = _composite("add", dst, torch.ones(1, 1, 1), x=1, y=1)
    assert torch.equal(out, torch.tensor([[[1.0, 0.0], [0.5, 1.0]]]))  # outside the paste clamped as well
    far = _composite("multiply", torch.ones(1, 2, 2), torch.zeros(1, 2, 2), x=5, y=0)
    assert torch.equal(far, torch.ones(1, 2, 2))
    batch = _composite("multiply", torch.ones(2, 2, 2), torch.full((1, 2, 2), 0.5))
    assert torch.equal(batch, torch.full((2, 2, 2), 0.5))
    with pytest.raises(ValueError, match="MaskComposite.source"):
        _composite("add", torch.ones(2, 2, 2), torch.ones(3, 2, 2))


def test_grow_mask_matches_scipy_grey_morphology():
    ndimage = pytest.importorskip("scipy.ndimage")
    import numpy as np

    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(2, 7, 9, generator=g) > 0.8).float() * torch.rand(2, 7, 9, generator=g)
    for expand in (-2, -1, 0, 1, 3):
        for tapered in (True, False):
            c = 0 if tapered else 1
            kernel = np.array([[c, 1, c], [1, 1, 1], [c, 1, c]])
            want = []
            for item in mask.numpy():
                for _ in range(abs(expand)):
                    op = ndimage.grey_dilation if expand > 0 else ndimage.grey_erosion
                    item = op(item, footprint=kernel)
                want.append(torch.from_numpy(np.ascontiguousarray(item)))
            (out,) = m.GrowMask().run(mask=mask, expand=expand, tapered_corners=tapered)
            assert torch.equal(out, torch.stack(want)), (expand, tapered)


def test_grow_mask_by_hand():
    dot = torch.zeros(1, 5, 5)
    dot[0, 2, 2] = 1
    (diamond,) = m.GrowMask().run(mask=dot, expand=1, tapered_corners=True)
    assert diamond[0].tolist()[1:4] == [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]]
    (square,) = m.GrowMask().run(mask=dot, expand=1, tapered_corners=False)
    assert square[0, 1:4, 1:4].eq(1).all() and square.sum() == 9
    (gone,) = m.GrowMask().run(mask=square, expand=-1, tapered_corners=False)
    assert torch.equal(gone, dot)


def test_feather_mask_follows_comfyuis_ramps():
    (out,) = m.FeatherMask().run(mask=torch.ones(1, 2, 5), left=2, top=0, right=3, bottom=0)
    # left: col 0 * 1/2, col 1 * 2/2; right (from index -i): col 0 * 1/3, col -1 * 2/3, col -2 * 3/3
    assert torch.allclose(out[0, 0], torch.tensor([0.5 / 3, 1.0, 1.0, 1.0, 2 / 3]))
    (rows,) = m.FeatherMask().run(mask=torch.ones(1, 4, 1), left=0, top=4, right=0, bottom=2)
    assert torch.allclose(rows[0, :, 0], torch.tensor([0.25 * 0.5, 0.5, 0.75, 1.0]))
    (capped,) = m.FeatherMask().run(mask=torch.ones(2, 1, 2), left=9, top=0, right=0, bottom=0)
    assert torch.allclose(capped, torch.tensor([0.5, 1.0]).expand(2, 1, 2))  # the ramp is cut to the width


def test_crop_mask():
    mask = torch.arange(12.0).reshape(3, 4)
    (out,) = m.CropMask().run(mask=mask, x=1, y=1, width=2, height=5)
    assert torch.equal(out, torch.tensor([[[5.0, 6.0], [9.0, 10.0]]]))
    with pytest.raises(ValueError, match=r"CropMask\.x"):
        m.CropMask().run(mask=mask, x=4, y=0, width=1, height=1)


def test_image_mask_conversions():
    image = torch.rand(2, 3, 4, 4)
    for k, channel in enumerate(m.CHANNELS):
        assert torch.equal(m.ImageToMask().run(image=image, channel=channel)[0], image[..., k])
    with pytest.raises(ValueError, match=r"ImageToMask\.channel.*3 channels"):
        m.ImageToMask().run(image=image[..., :3], channel="alpha")
    mask = torch.rand(3, 5)
    (img,) = m.MaskToImage().run(mask=mask)
    assert img.shape == (1, 3, 5, 3) and all(torch.equal(img[0, ..., c], mask) for c in range(3))


def test_image_color_to_mask_rounds_to_8_bits():
    image = torch.tensor([[[[1.0, 0.5, 0.0], [1.0, 127.4 / 255, 0.001], [1.0, 0.5, 0.003], [1.2, 0.5, -1.0]]]])
    (out,) = m.ImageColorToMask().run(image=image, color=0xFF8000)  # 0.5 * 255 = 127.5 rounds to 128 (0x80)
    assert out.tolist() == [[[1.0, 0.0, 0.0, 1.0]]]  # 127.4 -> 127; 0.003 * 255 -> 1; clamped values match


def test_alpha_split_and_join():
    rgba = torch.rand(2, 4, 4, 4)
    rgb, mask = m.SplitImageWithAlpha().run(image=rgba)
    assert torch.equal(rgb, rgba[..., :3]) and torch.allclose(mask, 1 - rgba[..., 3])
    rgb_only, none = m.SplitImageWithAlpha().run(image=rgba[..., :3])
    assert torch.equal(rgb_only, rgba[..., :3]) and not none.any()
    (joined,) = m.JoinImageWithAlpha().run(image=rgb, alpha=mask)
    assert torch.allclose(joined, rgba)
    small = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # upscaled 2x bilinearly to the image's 4x4
    (up,) = m.JoinImageWithAlpha().run(image=torch.zeros(3, 4, 4, 3), alpha=small)
    assert up.shape == (1, 4, 4, 4)  # the shorter batch (one mask) decides
    assert up[0, 0, :, 3].tolist() == pytest.approx([1.0, 0.75, 0.25, 0.0])
