"""Running an image function tile by tile and blending the tiles back, as ComfyUI's `tiled_scale` does.

The input [B, C, H, W] is cut into overlapping tiles; each tile goes through `fn`, whose output is `scale` times
the tile's size (2 or 4 for an upscale model, 8 for a VAE decoder, 1/8 for an encoder). Every output tile is
weighted by a feather that ramps linearly over the overlap at each of its edges and the weighted tiles are
averaged, so seams fade instead of showing. Item by item; an item that fits in one tile is passed whole.

Tile starts along a side of length n: 0, tile - overlap, 2 (tile - overlap), ... while below n - overlap, each
tile cut short at the border; output tiles start at round(start * scale). The feather over an output tile of
length L with ramp width f = round(overlap * scale) weighs position i by min(1, (i + 1) / f) * min(1, (L - i) / f)
(no ramp along a side whose tile is not longer than f).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

TileFn = Callable[[torch.Tensor], torch.Tensor]


def tile_spans(size: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, length) of each tile along one side."""
    if size <= tile:
        return [(0, size)]
    if tile <= overlap:
        raise ValueError(f"a tile of {tile} is not larger than the overlap of {overlap}")
    spans = []
    for start in range(0, size - overlap, tile - overlap):
        start = max(0, min(size - overlap, start))
        spans.append((start, min(tile, size - start)))
    return spans


def tile_count(height: int, width: int, tile_h: int, tile_w: int, overlap: int) -> int:
    """How many tiles one item takes (what a progress bar counts)."""
    rows = 1 if height <= tile_h else math.ceil((height - overlap) / max(1, tile_h - overlap))
    cols = 1 if width <= tile_w else math.ceil((width - overlap) / max(1, tile_w - overlap))
    return rows * cols


def feather(length: int, width: int) -> torch.Tensor:
    """The weight of each position of an output tile along one side (float32)."""
    if width <= 0 or width >= length:
        return torch.ones(length)
    i = torch.arange(length, dtype=torch.float64)
    ramp = torch.clamp((i + 1) / width, max=1.0) * torch.clamp((length - i) / width, max=1.0)
    return ramp.float()


def tiled_scale(samples: torch.Tensor, fn: TileFn, tile: tuple[int, int], overlap: int, scale: float,
                out_channels: int, on_tile: Callable[[], None] | None = None) -> torch.Tensor:
    """`fn` applied to `samples` [B, C, H, W] tile by tile (tile = (height, width)), blended; float32 on the CPU,
    [B, out_channels, round(H * scale), round(W * scale)]."""
    batch, _, height, width = samples.shape
    out_h, out_w = round(height * scale), round(width * scale)
    output = torch.empty(batch, out_channels, out_h, out_w)
    rows, cols = tile_spans(height, tile[0], overlap), tile_spans(width, tile[1], overlap)
    ramp = round(overlap * scale)
    for b in range(batch):
        item = samples[b:b + 1]
        if height <= tile[0] and width <= tile[1]:
            output[b:b + 1] = fn(item).float().cpu()
            _tick(on_tile)
            continue
        total = torch.zeros(1, out_channels, out_h, out_w)
        weight = torch.zeros(1, 1, out_h, out_w)
        for top, tile_h in rows:
            for left, tile_w in cols:
                piece = fn(item[:, :, top:top + tile_h, left:left + tile_w]).float().cpu()
                mask = feather(piece.shape[2], ramp)[:, None] * feather(piece.shape[3], ramp)[None, :]
                y, x = round(top * scale), round(left * scale)
                total[:, :, y:y + piece.shape[2], x:x + piece.shape[3]] += piece * mask
                weight[:, :, y:y + piece.shape[2], x:x + piece.shape[3]] += mask
                _tick(on_tile)
        output[b:b + 1] = total / weight
    return output


def _tick(on_tile: Callable[[], None] | None) -> None:
    if on_tile is not None:
        on_tile()


def pass_shapes(tile_x: int, tile_y: int, order: str) -> list[tuple[int, int]]:
    """The (height, width) tiles of ComfyUI's three tiled VAE passes: the square tile and two tiles of the same
    area stretched each way, in the order its decoder ("decode") or encoder ("encode") sums them."""
    square, wide, tall = (tile_y, tile_x), (tile_y // 2, tile_x * 2), (tile_y * 2, tile_x // 2)
    return [tall, wide, square] if order == "decode" else [square, wide, tall]


def averaged_passes(samples: torch.Tensor, fn: TileFn, shapes: list[tuple[int, int]], overlap: int, scale: float,
                    out_channels: int, on_tile: Callable[[], None] | None = None) -> torch.Tensor:
    """The mean of `tiled_scale` over several tile shapes: each pass puts its seams elsewhere, so averaging the
    passes softens what is left of them."""
    total = tiled_scale(samples, fn, shapes[0], overlap, scale, out_channels, on_tile)
    for shape in shapes[1:]:
        total += tiled_scale(samples, fn, shape, overlap, scale, out_channels, on_tile)
    return total / len(shapes)


def passes_tile_count(height: int, width: int, shapes: list[tuple[int, int]], overlap: int, batch: int) -> int:
    return batch * sum(tile_count(height, width, h, w, overlap) for h, w in shapes)
