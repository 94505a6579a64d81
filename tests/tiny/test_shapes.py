"""The synthetic shapes dataset: deterministic, captions that say what the pictures show, sane pictures."""

from __future__ import annotations

import numpy as np
import pytest

from sdgraph.tiny import shapes
from sdgraph.tiny.shapes import (
    ATTRIBUTES,
    COLOURS,
    ShapeLabels,
    generate_dataset,
    generate_sample,
    make_caption,
    parse_caption,
    random_caption,
)


@pytest.fixture(scope="module")
def dataset() -> shapes.ShapeDataset:
    return generate_dataset(400, seed=7)


def test_same_seed_same_pictures_and_captions() -> None:
    a, b = generate_dataset(12, seed=3), generate_dataset(12, seed=3)
    for field in ("images", "outlines", "outline_styles", "masks"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert a.captions == b.captions


def test_other_seed_other_samples() -> None:
    assert generate_dataset(12, seed=3).captions != generate_dataset(12, seed=4).captions


def test_sample_depends_only_on_seed_and_index() -> None:
    whole = generate_dataset(6, seed=5)
    part = generate_dataset(3, seed=5, start=2)
    assert np.array_equal(whole.images[2:5], part.images)
    assert generate_sample(5, 4).caption == whole.captions[4]


def test_arrays_have_the_documented_layout(dataset: shapes.ShapeDataset) -> None:
    n = len(dataset)
    assert dataset.images.shape == (n, 64, 64, 3) and dataset.images.dtype == np.uint8
    assert dataset.outlines.shape == (n, 64, 64, 3)
    assert dataset.outline_styles.shape == (n, 64, 64, 3)
    assert dataset.masks.shape == (n, 64, 64)
    for name, values in ATTRIBUTES.items():
        assert dataset.label_indices[name].shape == (n,)
        assert set(dataset.label_indices[name]) == set(range(len(values))), f"every {name} occurs"


def test_captions_match_labels(dataset: shapes.ShapeDataset) -> None:
    for caption, labels in zip(dataset.captions, dataset.labels):
        assert parse_caption(caption) == {
            "shape": labels.shape, "colour": labels.colour, "background": labels.background,
            "position": labels.position, "size": labels.size,
        }
        assert caption == make_caption(labels)


def test_caption_format() -> None:
    labels = ShapeLabels("circle", "red", "blue", "left", "large")
    assert make_caption(labels) == "a large red circle on the left, blue background"
    assert make_caption(labels, size=False, position=False, background=False) == "a red circle"
    orange = ShapeLabels("star", "orange", "black", "centre", "small")
    assert make_caption(orange, size=False) == "an orange star in the centre, black background"


def test_random_caption_variants_only_leave_parts_out() -> None:
    rng = np.random.default_rng(0)
    labels = ShapeLabels("triangle", "green", "gray", "top", "small")
    for _ in range(50):
        named = parse_caption(random_caption(labels, rng))
        assert named["shape"] == "triangle" and named["colour"] == "green"
        assert all(getattr(labels, k) == v for k, v in named.items())


def test_shape_colour_differs_from_background(dataset: shapes.ShapeDataset) -> None:
    assert all(lab.colour != lab.background for lab in dataset.labels)


def test_pictures_show_the_labels(dataset: shapes.ShapeDataset) -> None:
    """Background at a far corner, shape colour at the mask's centre, mask centroid on the named side."""
    for i, labels in enumerate(dataset.labels[:100]):
        image, mask = dataset.images[i].astype(int), dataset.masks[i] > 127
        ys, xs = np.nonzero(mask)
        cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2  # bounding-box centre
        far = (63 - round(cx) // 32 * 63, 63 - round(cy) // 32 * 63)  # the corner farthest from the shape
        assert np.abs(image[far[1], far[0]] - COLOURS[labels.background]).max() <= shapes.COLOUR_JITTER + 1
        inside = image[dataset.masks[i] >= 250].mean(axis=0)  # leave the antialiased edge out
        assert np.abs(inside - COLOURS[labels.colour]).max() <= shapes.COLOUR_JITTER + 8
        expected = {"left": cx < 24, "right": cx > 40, "top": cy < 24, "bottom": cy > 40,
                    "centre": abs(cx - 32) < 4 and abs(cy - 32) < 4}
        assert expected[labels.position], (labels, cx, cy)
        other = ShapeLabels(labels.shape, labels.colour, labels.background, labels.position,
                            "small" if labels.size == "large" else "large")
        ratio = mask.sum() / (shapes.render(other).mask > 127).sum()
        assert ratio > 2 if labels.size == "large" else ratio < 0.5, (labels, ratio)


def test_outline_traces_the_shape_border(dataset: shapes.ShapeDataset) -> None:
    for i in range(50):
        outline = dataset.outlines[i].max(axis=-1) > 127
        mask = dataset.masks[i] > 127
        assert outline.any()
        # Stroke pixels lie on or next to the shape, and the stroke covers much less than the fill.
        grown = np.zeros_like(mask)
        ys, xs = np.nonzero(mask)
        for dy in (-2, -1, 0, 1, 2):
            for dx in (-2, -1, 0, 1, 2):
                grown[np.clip(ys + dy, 0, 63), np.clip(xs + dx, 0, 63)] = True
        assert (outline & ~grown).sum() == 0
        assert outline.sum() < mask.sum()


def test_outline_style_draws_less_of_the_shape_colour(dataset: shapes.ShapeDataset) -> None:
    for i, labels in enumerate(dataset.labels[:50]):
        colour = np.array(COLOURS[labels.colour])
        filled = (np.abs(dataset.images[i].astype(int) - colour).max(axis=-1) < 40).sum()
        styled = (np.abs(dataset.outline_styles[i].astype(int) - colour).max(axis=-1) < 40).sum()
        assert styled < 0.8 * filled
