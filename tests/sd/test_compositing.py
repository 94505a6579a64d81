"""PorterDuffImageComposite (nodes/sd/compositing.py) on known pixels: the twelve Porter-Duff operators from their
textbook coverage factors (Fa, Fb), the six blend modes from ComfyUI's formulas written out on numbers, and the
resizing of the source and the masks to the destination."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sdgraph.nodes.sd.compositing import MODES, PorterDuffImageComposite

CS, AS, CD, AD = 0.8, 0.6, 0.3, 0.5  # source colour and alpha, destination colour and alpha (MASK = 1 - alpha)

# Porter and Duff's operators: result alpha = AS * Fa + AD * Fb, premultiplied colour = AS * CS * Fa + AD * CD * Fb
FACTORS = {"CLEAR": (0, 0), "SRC": (1, 0), "DST": (0, 1), "SRC_OVER": (1, 1 - AS), "DST_OVER": (1 - AD, 1),
           "SRC_IN": (AD, 0), "DST_IN": (0, AS), "SRC_OUT": (1 - AD, 0), "DST_OUT": (0, 1 - AS),
           "SRC_ATOP": (AD, 1 - AS), "DST_ATOP": (1 - AD, AS), "XOR": (1 - AD, 1 - AS)}

S, D = CS * AS, CD * AD  # premultiplied
UNION = AS + AD - AS * AD
BLENDS = {  # (premultiplied colour, alpha)
    "ADD": (min(S + D, 1), min(AS + AD, 1)),
    "MULTIPLY": (S * D, AS * AD),
    "SCREEN": (S + D - S * D, UNION),
    "DARKEN": ((1 - AD) * S + (1 - AS) * D + min(S, D), UNION),
    "LIGHTEN": ((1 - AD) * S + (1 - AS) * D + max(S, D), UNION),
    # 2 D = 0.3 is below AD = 0.5: the multiply branch
    "OVERLAY": (2 * S * D if 2 * D < AD else AS * AD - 2 * (AD - S) * (AS - D), UNION),
}


def composite(source, source_alpha, destination, destination_alpha, mode):
    return PorterDuffImageComposite().run(source=source, source_alpha=source_alpha, destination=destination,
                                          destination_alpha=destination_alpha, mode=mode)


def one_pixel(mode: str) -> tuple[float, float]:
    image, mask = composite(torch.full((1, 2, 2, 3), CS), torch.full((1, 2, 2), 1 - AS), torch.full((1, 2, 2, 3), CD),
                            torch.full((1, 2, 2), 1 - AD), mode)
    assert image.shape == (1, 2, 2, 3) and mask.shape == (1, 2, 2)
    return image[0, 0, 0, 0].item(), mask[0, 0, 0].item()


def unpremultiplied(colour: float, alpha: float) -> float:
    return min(max(colour / alpha, 0.0), 1.0) if alpha > 1e-5 else 0.0


@pytest.mark.parametrize("mode", sorted(FACTORS))
def test_the_porter_duff_operators_follow_their_coverage_factors(mode):
    fa, fb = FACTORS[mode]
    alpha = AS * fa + AD * fb
    colour, mask = one_pixel(mode)
    assert mask == pytest.approx(1 - alpha, abs=1e-6)
    assert colour == pytest.approx(unpremultiplied(S * fa + D * fb, alpha), abs=1e-6)


@pytest.mark.parametrize("mode", sorted(BLENDS))
def test_the_blend_modes(mode):
    premultiplied, alpha = BLENDS[mode]
    colour, mask = one_pixel(mode)
    assert mask == pytest.approx(1 - alpha, abs=1e-6)
    assert colour == pytest.approx(unpremultiplied(premultiplied, alpha), abs=1e-6)


def test_every_mode_is_covered_and_overlay_takes_its_screen_branch_on_a_light_destination():
    assert set(MODES) == set(FACTORS) | set(BLENDS)
    image, _ = composite(torch.full((1, 1, 1, 3), 0.2), torch.full((1, 1, 1), 0.3), torch.full((1, 1, 1, 3), 0.9),
                         torch.full((1, 1, 1), 0.1), "OVERLAY")
    s, d = 0.2 * 0.7, 0.9 * 0.9  # 2 d = 1.62 is not below the destination alpha 0.9: the screen half
    expected = (0.7 * 0.9 - 2 * (0.9 - s) * (0.7 - d)) / (0.7 + 0.9 - 0.7 * 0.9)
    assert image.flatten()[0].item() == pytest.approx(expected, abs=1e-6)


def test_a_transparent_result_is_black_and_fully_masked():
    image, mask = composite(torch.rand(1, 3, 3, 3), torch.zeros(1, 3, 3), torch.rand(1, 3, 3, 3),
                            torch.zeros(1, 3, 3), "CLEAR")
    assert torch.all(image == 0) and torch.all(mask == 1)
    image, mask = composite(torch.rand(1, 3, 3, 3), torch.ones(1, 3, 3), torch.rand(1, 3, 3, 3),
                            torch.ones(1, 3, 3), "SRC_OVER")
    assert torch.all(image == 0) and torch.all(mask == 1)


def test_the_source_and_masks_are_fitted_to_the_destination_bicubic_after_a_centre_crop():
    source = torch.rand(2, 4, 8, 3, generator=torch.Generator().manual_seed(0))
    source_alpha = torch.zeros(8, 8)  # one [H, W] mask for every item
    destination = torch.rand(3, 6, 6, 3, generator=torch.Generator().manual_seed(1))
    destination_alpha = torch.zeros(3, 3, 3)
    image, mask = composite(source, source_alpha, destination, destination_alpha, "SRC")
    assert image.shape == (1, 6, 6, 3) and mask.shape == (1, 6, 6)  # as many as the shortest batch: one mask
    # 4x8 to 6x6: ComfyUI's crop keeps columns 2..5 (round((8 - 4) / 2) = 2 on each side), then bicubic
    expected = F.interpolate(source[:1, :, 2:6].movedim(-1, 1), size=(6, 6), mode="bicubic").movedim(1, -1)
    assert torch.allclose(image, expected.clamp(0, 1), atol=1e-6) and torch.all(mask == 0)
    (_, dst_only) = composite(source[:1], torch.ones(1, 6, 6), destination[:1], destination_alpha[:1], "DST")
    assert torch.allclose(dst_only, torch.zeros(1, 6, 6), atol=1e-6)  # the 3x3 mask resized to 6x6


def test_channels_must_agree():
    with pytest.raises(ValueError, match="PorterDuffImageComposite.source: 4 channels"):
        composite(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2),
                  "SRC")
    with pytest.raises(ValueError, match="PorterDuffImageComposite.mode"):
        composite(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2),
                  "PLUS")
