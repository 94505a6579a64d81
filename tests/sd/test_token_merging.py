"""Token merging (TomePatchModel): the bipartite merge against a loop-by-loop reference, and the node on the tiny
SD1 model (fewer query tokens in full-resolution self-attention, output restored to full size)."""
from __future__ import annotations

from typing import Any

import torch

from conftest import call
from sdgraph.nodes.sd.token_merging import TomePatchModel, bipartite_merge, destinations
from sdgraph.nodes.sd.unet_walk import patched_unet


def test_one_destination_per_whole_cell() -> None:
    g = torch.Generator().manual_seed(4)
    for _ in range(5):
        dst = destinations(5, 3, g).tolist()  # 2 whole 2x2 cells; column 4 and row 2 are partial
        assert len(dst) == 2
        cells = sorted(((i // 5) // 2, (i % 5) // 2) for i in dst)
        assert cells == [(0, 0), (0, 1)]


def merged_reference(x: torch.Tensor, width: int, height: int, count: int, dst: list[int]) -> torch.Tensor:
    """unmerge(merge(x)) by loops: each source's most similar destination (cosine), the `count` best-matching
    sources averaged with their destination, every member of a group showing the group's mean."""
    out = x.clone()
    src = [i for i in range(width * height) if i not in dst]
    for b in range(x.shape[0]):
        unit = x[b] / x[b].norm(dim=-1, keepdim=True)
        best = [(float((unit[s] @ unit[dst].T).max()), s, dst[int((unit[s] @ unit[dst].T).argmax())]) for s in src]
        moved = sorted(best, reverse=True)[:count]
        groups: dict[int, list[int]] = {d: [d] for d in dst}
        for _, s, d in moved:
            groups[d].append(s)
        for members in groups.values():
            out[b, members] = x[b, members].mean(0)
    return out


def test_merge_then_unmerge_gives_each_group_its_mean() -> None:
    width, height, count = 6, 5, 7
    x = torch.randn(2, width * height, 8, generator=torch.Generator().manual_seed(0))
    merge, unmerge = bipartite_merge(x, width, height, count, torch.Generator().manual_seed(9))
    dst = destinations(width, height, torch.Generator().manual_seed(9)).tolist()
    merged = merge(x)
    assert merged.shape == (2, width * height - count, 8)
    torch.testing.assert_close(unmerge(merged), merged_reference(x, width, height, count, dst), rtol=0, atol=1e-6)
    same, _ = bipartite_merge(x, width, height, 0, torch.Generator())
    assert same(x) is x


def _run(model: Any) -> tuple[torch.Tensor, list, torch.Tensor]:
    unet = model.unet()
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 64, generator=g)
    seen: list = []
    recorded = model.clone()
    recorded.set_model_attn1_patch(lambda n, c, v, e: seen.append((n.shape[1], c.shape[1])) or (n, c, v))
    options = {**recorded.model_options["transformer_options"], "cond_or_uncond": [1, 0],
               "sigmas": torch.full((2,), 4.0)}
    with torch.inference_mode():
        out = patched_unet(unet, x, torch.tensor([500.0]), context, options)
        plain = unet(x, torch.tensor([500.0]), encoder_hidden_states=context, return_dict=False)[0]
    return out, seen, plain


def test_tome_merges_full_resolution_queries_and_restores_the_output(sd1: tuple, ctx: Any) -> None:
    model = sd1[0]
    out, seen, plain = _run(call(TomePatchModel, ctx, model=model, ratio=0.5)[0])
    # full resolution (8x8 = 64 tokens): 32 queries left; the 4x4 middle block is left alone; keys stay whole
    assert seen == [(32, 64), (16, 16), (32, 64), (32, 64)]
    assert out.shape == (2, 4, 8, 8) and not torch.allclose(out, plain)
    assert torch.equal(_run(call(TomePatchModel, ctx, model=model, ratio=0.5)[0])[0], out)  # same run, same picture
    untouched, seen, plain = _run(call(TomePatchModel, ctx, model=model, ratio=0.0)[0])
    assert torch.equal(untouched, plain) and seen == [(64, 64), (16, 16), (64, 64), (64, 64)]
