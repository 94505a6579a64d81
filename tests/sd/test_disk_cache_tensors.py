"""Images, latents, masks and conditioning come back from the disk cache bit for bit; models never go there."""
from __future__ import annotations

from pathlib import Path

import torch

from sdgraph.disk_cache import DiskCache


def test_tensor_outputs_round_trip_bit_for_bit(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(2, 16, 16, 3, generator=generator)
    latent = {"samples": torch.randn(2, 4, 8, 8, generator=generator), "batch_index": [0, 1],
              "noise_mask": torch.rand(2, 1, 8, 8, generator=generator)}
    half = torch.randn(1, 77, 32, generator=generator).half()
    conditioning = [[half, {"pooled_output": torch.randn(1, 32, generator=generator), "strength": 0.5}]]
    shared = torch.arange(12.0).reshape(3, 4)
    values = ([image], [latent], [conditioning], [(shared, shared[1:], shared)])
    disk = DiskCache(tmp_path)
    assert disk.put("e" * 64, values, None)
    (got_image,), (got_latent,), (got_cond,), (got_views,) = DiskCache(tmp_path).get("e" * 64)[0]
    assert torch.equal(got_image, image) and got_image.dtype == torch.float32
    assert torch.equal(got_latent["samples"], latent["samples"]) and got_latent["batch_index"] == [0, 1]
    assert torch.equal(got_latent["noise_mask"], latent["noise_mask"])
    assert got_cond[0][0].dtype == torch.float16 and torch.equal(got_cond[0][0], half)
    assert torch.equal(got_cond[0][1]["pooled_output"], conditioning[0][1]["pooled_output"])
    assert got_cond[0][1]["strength"] == 0.5
    assert all(torch.equal(a, b) for a, b in zip(got_views, (shared, shared[1:], shared)))


def test_a_conditioning_holding_a_model_object_stays_in_memory(tmp_path: Path) -> None:
    conditioning = [[torch.zeros(1, 77, 32), {"control": torch.nn.Linear(2, 2)}]]
    assert not DiskCache(tmp_path).put("c" * 64, ([conditioning],), None)
    assert not list(tmp_path.glob("??/*.out"))
