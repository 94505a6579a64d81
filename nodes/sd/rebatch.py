"""Regrouping batches: lists of image or latent batches cut into batches of a chosen size (list outputs, so what
follows runs once per batch), and which seed each item of a latent batch gets (its `batch_index`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sdgraph.node import Combo, Input, Int, Node, Output
from sdgraph.nodes.sd.batching import to_batch
from sdgraph.types import IMAGE, LATENT


class RebatchImages(Node):
    """All the images of the incoming list of batches, in order, in batches of `batch_size` (the last may be
    smaller)."""

    category = "image/batch"
    input_is_list = True
    inputs = [Input("images", IMAGE), Int("batch_size", 1, min=1, max=4096)]
    outputs = [Output(IMAGE, is_list=True)]

    def run(self, images: list[torch.Tensor], batch_size: list[int]) -> tuple:
        size = batch_size[0]
        items = [item for batch in images for item in batch]
        shapes = {tuple(item.shape) for item in items}
        if len(shapes) > 1:
            raise ValueError(f"RebatchImages.images: images of different sizes cannot share a batch: "
                             f"{', '.join('x'.join(map(str, s[1::-1])) for s in sorted(shapes))} (width x height)")
        return ([torch.stack(items[start:start + size]) for start in range(0, len(items), size)],)


@dataclass
class _Group:
    """Latent items being gathered into a batch: samples [n, C, h, w], their noise mask [n, 1, H, W] (ones where
    the latent had none) and the seed index of each item."""

    samples: torch.Tensor
    mask: torch.Tensor
    indices: list[int]

    def __len__(self) -> int:
        return self.samples.shape[0]

    def then(self, other: _Group) -> _Group:
        mask = other.mask
        if mask.shape[-2:] != self.mask.shape[-2:]:  # masks of another size are brought to this group's
            mask = F.interpolate(mask, size=self.mask.shape[-2:], mode="bilinear")
        return _Group(torch.cat([self.samples, other.samples]), torch.cat([self.mask, mask.to(self.mask)]),
                      self.indices + other.indices)

    def part(self, start: int, stop: int) -> _Group:
        return _Group(self.samples[start:stop], self.mask[start:stop], self.indices[start:stop])

    def latent(self) -> dict[str, Any]:
        out: dict[str, Any] = {"samples": self.samples, "batch_index": self.indices}
        if not bool((self.mask == 1).all()):  # an all-ones mask is no mask
            out["noise_mask"] = self.mask
        return out


def _group(latent: dict[str, Any], first_index: int) -> _Group:
    """One incoming latent as a group; without a batch_index its items count on from `first_index`."""
    samples = latent["samples"]
    batch, _, height, width = samples.shape
    mask = latent.get("noise_mask")
    if mask is None:
        mask = torch.ones(batch, 1, height * 8, width * 8)
    mask = mask.reshape(-1, 1, *mask.shape[-2:])
    if mask.shape[0] < batch:
        mask = to_batch(mask, batch)
    indices = list(latent["batch_index"]) if "batch_index" in latent else list(range(first_index,
                                                                                     first_index + batch))
    return _Group(samples, mask, indices)


def rebatch_latents(latents: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The items of the latents, in order, in batches of `size`; a change of latent size closes a batch early.
    Each item keeps its noise mask and its seed index (its place in the whole list when it had none)."""
    out: list[_Group] = []
    group: _Group | None = None
    seen = 0
    for latent in latents:
        incoming = _group(latent, seen)
        seen += len(incoming.indices)
        if group is None:
            group = incoming
        elif incoming.samples.shape[-2:] != group.samples.shape[-2:]:
            out.append(group)
            group = incoming
        else:
            group = group.then(incoming)
        if len(group) > size:
            full = len(group) // size
            out.extend(group.part(k * size, (k + 1) * size) for k in range(full))
            group = group.part(full * size, len(group)) if full * size < len(group) else None
    if group is not None:
        out.append(group)
    return [g.latent() for g in out]


class RebatchLatents(Node):
    """All the latent items of the incoming list of batches, in order, in batches of `batch_size`; each keeps
    its noise mask and the seed index it had (a latent of another size starts a new batch)."""

    category = "latent/batch"
    input_is_list = True
    inputs = [Input("latents", LATENT), Int("batch_size", 1, min=1, max=4096)]
    outputs = [Output(LATENT, is_list=True)]

    def run(self, latents: list[dict[str, Any]], batch_size: list[int]) -> tuple:
        return (rebatch_latents(latents, batch_size[0]),)


class LatentBatchSeedBehavior(Node):
    """"fixed": every item of the batch is noised like its first one (the same seed index); "random": the
    batch_index is dropped, so the items get the successive noise of one batch."""

    category = "latent/advanced"
    inputs = [Input("samples", LATENT), Combo("seed_behavior", ("random", "fixed"), default="fixed")]
    outputs = [Output(LATENT)]

    def run(self, samples: dict[str, Any], seed_behavior: str) -> tuple:
        out = dict(samples)
        if seed_behavior == "random":
            out.pop("batch_index", None)
        elif seed_behavior == "fixed":
            first = list(out.get("batch_index", [0]))[0]
            out["batch_index"] = [first] * samples["samples"].shape[0]
        else:
            raise ValueError(f"LatentBatchSeedBehavior.seed_behavior: {seed_behavior!r} is not random or fixed")
        return (out,)


NODES_IMAGE = [RebatchImages]
NODES_LATENT = [RebatchLatents, LatentBatchSeedBehavior]
