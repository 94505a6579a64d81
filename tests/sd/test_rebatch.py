"""RebatchImages, RebatchLatents and LatentBatchSeedBehavior (nodes/sd/rebatch.py): items regrouped in order with
their noise masks and seed indices, the list outputs run through the executor, and the seed indices giving each
item the noise it had in the whole batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdgraph.nodes.sd.noise import batch_noise
from sdgraph.nodes.sd.rebatch import LatentBatchSeedBehavior, RebatchImages, RebatchLatents
from sdgraph.runtime import RuntimeOptions, create_executor


def numbered(first: int, count: int, size: int = 2) -> torch.Tensor:
    """Images whose pixels all hold their number in the whole sequence."""
    return torch.arange(first, first + count, dtype=torch.float32).view(count, 1, 1, 1).expand(count, size, size, 3)


def latent(first: int, count: int, side: int = 4, **extra) -> dict:
    samples = torch.arange(first, first + count, dtype=torch.float32).view(count, 1, 1, 1)
    return {"samples": samples.expand(count, 4, side, side).clone(), **extra}


def rebatch(latents: list[dict], size: int) -> list[dict]:
    return RebatchLatents().run(latents=latents, batch_size=[size])[0]


def test_images_are_regrouped_in_order():
    (batches,) = RebatchImages().run(images=[numbered(0, 3), numbered(3, 2)], batch_size=[2])
    assert [b[:, 0, 0, 0].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    with pytest.raises(ValueError, match=r"RebatchImages.images: .*2x2, 3x3"):
        RebatchImages().run(images=[numbered(0, 1), numbered(1, 1, size=3)], batch_size=[2])


def test_latents_keep_their_masks_and_seed_indices_across_the_regrouping():
    mask = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out = rebatch([latent(0, 3), latent(3, 2, noise_mask=mask, batch_index=[7, 9])], 2)
    assert [o["samples"][:, 0, 0, 0].tolist() for o in out] == [[0, 1], [2, 3], [4]]
    assert [o["batch_index"] for o in out] == [[0, 1], [2, 7], [9]]
    assert "noise_mask" not in out[0]  # all ones: no mask
    assert torch.equal(out[1]["noise_mask"], torch.cat([torch.ones(1, 1, 32, 32), mask[:1]]))
    assert torch.equal(out[2]["noise_mask"], mask[1:])


def test_a_latent_of_another_size_closes_the_batch_and_indices_count_on():
    out = rebatch([latent(0, 2), latent(2, 1, side=8), latent(3, 3, side=8)], 3)
    assert [tuple(o["samples"].shape) for o in out] == [(2, 4, 4, 4), (3, 4, 8, 8), (1, 4, 8, 8)]
    assert [o["batch_index"] for o in out] == [[0, 1], [2, 3, 4], [5]]
    exact = rebatch([latent(0, 4)], 2)  # no empty batch after an exact split
    assert [o["batch_index"] for o in exact] == [[0, 1], [2, 3]]


def test_short_or_differently_sized_masks_are_fitted():
    one = torch.zeros(1, 1, 32, 32)
    (out,) = rebatch([latent(0, 3, noise_mask=one)], 4)
    assert torch.equal(out["noise_mask"], torch.zeros(3, 1, 32, 32))  # one mask for the three items
    small = torch.zeros(1, 1, 16, 16)  # ComfyUI cannot join these; sdgraph resizes the newcomer to the group's
    (joined,) = rebatch([latent(0, 1, noise_mask=torch.zeros(1, 1, 32, 32)), latent(1, 1, noise_mask=small)], 2)
    assert joined["noise_mask"].shape == (2, 1, 32, 32) and torch.all(joined["noise_mask"] == 0)


def test_the_regrouped_indices_draw_the_noise_each_item_had_in_the_whole_batch():
    whole = batch_noise(42, (5, 4, 4, 4))
    for part in rebatch([latent(0, 5)], 2):
        indices = part["batch_index"]
        assert torch.equal(batch_noise(42, part["samples"].shape, indices), whole[indices])


def test_seed_behavior_fixed_and_random():
    (fixed,) = LatentBatchSeedBehavior().run(samples=latent(0, 3), seed_behavior="fixed")
    assert fixed["batch_index"] == [0, 0, 0]
    (kept_first,) = LatentBatchSeedBehavior().run(samples=latent(0, 3, batch_index=[4, 5, 6]), seed_behavior="fixed")
    assert kept_first["batch_index"] == [4, 4, 4]
    source = latent(0, 3, batch_index=[4, 5, 6])
    (free,) = LatentBatchSeedBehavior().run(samples=source, seed_behavior="random")
    assert "batch_index" not in free and source["batch_index"] == [4, 5, 6]  # the input is left as it was
    same = batch_noise(7, (3, 4, 4, 4), kept_first["batch_index"])
    assert torch.equal(same[0], same[1]) and torch.equal(same[1], same[2])  # every item noised like the first
    assert torch.equal(same[0], batch_noise(7, (5, 4, 4, 4))[4])
    assert not torch.equal(batch_noise(7, (3, 4, 4, 4))[0], batch_noise(7, (3, 4, 4, 4))[1])


def test_the_list_output_runs_what_follows_once_per_batch(tmp_path: Path):
    executor = create_executor(RuntimeOptions(base_dir=tmp_path, plugins=False))
    workflow = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 5, "color": 0}},
                "2": {"class_type": "RebatchImages", "inputs": {"images": ["1", 0], "batch_size": 2}},
                "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
                "4": {"class_type": "RebatchImages", "inputs": {"images": ["3", 0], "batch_size": 5}},
                "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "rebatched"}}}
    result = executor.run(workflow)
    assert result.ok, result.error
    records = result.outputs["5"]["images"]
    assert len(records) == 5  # three inverted batches of 2, 2, 1 gathered back into one, saved by one call
    for record in records:
        assert np.asarray(Image.open(tmp_path / "output" / record["filename"])).min() == 255  # black, inverted
