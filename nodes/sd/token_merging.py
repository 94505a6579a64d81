"""Token merging for the UNet's self-attention (ToMe for SD) and the TomePatchModel node.

At the full latent resolution, the queries of each self-attention are cut down before the attention and restored
after it (ComfyUI's placement: the attn1 patch merges the query input, the attn1 output patch unmerges):

- the token grid is split into 2x2 cells; one random token of each whole cell is a destination, every other
  token (those of partial cells at an odd edge included) a source;
- each source's most similar destination is found by cosine similarity; the `ratio * tokens` sources with the
  highest similarity are averaged into their destinations (mean, the destination counted once), the rest kept;
- after the attention, every merged source takes its destination's output; the others get their own.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from sdgraph.node import Float, Input, Node, Output
from sdgraph.nodes.sd.model_objects import DiffusionModel
from sdgraph.nodes.sd.unet_patches import call_seed
from sdgraph.types import MODEL

Tensor = torch.Tensor
Merge = Callable[[Tensor], Tensor]


def _keep(x: Tensor) -> Tensor:
    return x


def destinations(width: int, height: int, generator: torch.Generator) -> Tensor:
    """Raster indices (into a height x width grid) of one randomly chosen token in each whole 2x2 cell."""
    cells_y, cells_x = height // 2, width // 2
    pick = torch.randint(4, (cells_y, cells_x), generator=generator)
    rows = torch.arange(cells_y)[:, None] * 2 + pick // 2
    cols = torch.arange(cells_x)[None, :] * 2 + pick % 2
    return (rows * width + cols).flatten()


def bipartite_merge(metric: Tensor, width: int, height: int, count: int,
                    generator: torch.Generator) -> tuple[Merge, Merge]:
    """(merge, unmerge) that take [B, width * height, C] to [B, width * height - count, C] and back, merging
    the `count` sources (at most all of them) most similar to a destination by the metric [B, N, C]."""
    batch, tokens, _ = metric.shape
    if count <= 0 or width == 1 or height == 1 or tokens != width * height:
        return _keep, _keep
    device = metric.device
    dst = destinations(width, height, generator).to(device)
    is_dst = torch.zeros(tokens, dtype=torch.bool, device=device)
    is_dst[dst] = True
    src = torch.nonzero(~is_dst).flatten()
    count = min(count, src.numel())
    with torch.no_grad():
        unit = metric / metric.norm(dim=-1, keepdim=True)
        similarity = unit[:, src] @ unit[:, dst].transpose(-1, -2)
        best, target = similarity.max(dim=-1)  # each source's closest destination
        order = best.argsort(dim=-1, descending=True)
    moved, kept = order[:, :count], order[:, count:]
    moved_target = torch.gather(target, 1, moved)

    def pick(x: Tensor, index: Tensor) -> Tensor:
        return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))

    def merge(x: Tensor) -> Tensor:
        sources, merged = x[:, src], x[:, dst]
        merged = merged.scatter_reduce(1, moved_target[..., None].expand(-1, -1, x.shape[-1]), pick(sources, moved),
                                       reduce="mean")
        return torch.cat([pick(sources, kept), merged], dim=1)

    def unmerge(y: Tensor) -> Tensor:
        n_kept = kept.shape[1]
        own, merged = y[:, :n_kept], y[:, n_kept:]
        out = torch.empty(y.shape[0], tokens, y.shape[-1], device=y.device, dtype=y.dtype)
        out[:, dst] = merged
        rows = torch.arange(y.shape[0], device=y.device)[:, None]
        out[rows, src[kept]] = own
        out[rows, src[moved]] = pick(merged, moved_target)
        return out

    return merge, unmerge


def merge_functions(x: Tensor, ratio: float, original_shape: list[int], seed: int) -> tuple[Merge, Merge]:
    """ToMe's functions for one self-attention input x [B, N, C]: merging only at the full latent resolution."""
    _, _, height, width = original_shape
    downsample = int(math.ceil(math.sqrt((height * width) // x.shape[1])))
    if downsample > 1:
        return _keep, _keep
    generator = torch.Generator().manual_seed(seed)
    return bipartite_merge(x, width, height, int(x.shape[1] * ratio), generator)


class TomePatch:
    """The attn1 patch pair: `merge` the query input, `unmerge` the attention output of the same call."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio
        self.unmerge: Merge = _keep

    def merge(self, q: Tensor, k: Tensor, v: Tensor, extra_options: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        merge, self.unmerge = merge_functions(q, self.ratio, extra_options["original_shape"],
                                              call_seed(extra_options))
        return merge(q), k, v

    def restore(self, out: Tensor, extra_options: dict[str, Any]) -> Tensor:
        return self.unmerge(out)


class TomePatchModel(Node):
    """Merge similar tokens in the UNet's full-resolution self-attention (ToMe): faster, slightly softer."""

    category = "model_patches/unet"
    inputs = [Input("model", MODEL),
              Float("ratio", 0.3, min=0.0, max=1.0, step=0.01, tooltip="share of the tokens merged away")]
    outputs = [Output(MODEL)]

    def run(self, model: DiffusionModel, ratio: float) -> tuple:
        patch = TomePatch(ratio)
        patched = model.clone()
        patched.set_model_attn1_patch(patch.merge)
        patched.set_model_attn1_output_patch(patch.restore)
        return (patched,)


NODES = [TomePatchModel]
