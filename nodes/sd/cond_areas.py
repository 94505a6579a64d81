"""Where and when a conditioning entry acts, resolved for one sampling run as ComfyUI's sampler resolves it.

- "area": (h, w, y, x) in latent pixels, or ("percentage", h, w, y, x) as fractions of the latent's size
  (sizes round(f * size) but at least 1, offsets round(f * size)); with "mask" and "set_area_to_bounds" the area
  is the bounding box of the mask (resized to the latent, nonzero anywhere in its batch), at least 8x8, or
  (8, 8, 0, 0) for an all-zero mask.
- the weight ("mult") an entry's prediction gets in the average of its side: "strength" everywhere on its area,
  times the mask (times "mask_strength") when it has one; an area without a mask fades in over up to 8 latent
  pixels (a quarter of the area's side at most) along every edge that is not the latent's own edge.
- "start_percent" / "end_percent": the entry is left out of a step whose sigma lies above the sigma at
  start_percent or below the one at end_percent (ComfyUI's `percent_to_sigma`, compared in float32).
- an area entry on one side gets a twin on the other side with the same area, mask, strength and window but the
  other side's model inputs (text, pooled output, extra channels) from the smallest entry whose area holds it
  (ComfyUI's `create_cond_with_same_area_if_none`), so guidance compares like with like.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from sdgraph.nodes.sd.schedules import DiscreteSchedule

Tensor = torch.Tensor
Area = tuple[int, int, int, int]  # (h, w, y, x) in latent pixels

# Extras that say where / when / how strongly an entry acts (and its GLIGEN boxes, which ComfyUI's twin keeps
# from the area entry too); all other keys are the model's inputs.
SAMPLER_KEYS = frozenset({"area", "strength", "mask", "mask_strength", "set_area_to_bounds", "start_percent",
                          "end_percent", "control", "gligen"})
MIN_BOUNDS = 8  # the smallest side of an area taken from a mask's bounds
FUZZ = 8  # latent pixels over which an area without a mask fades in
NO_START = 999999999.9  # ComfyUI's sigma for percent 0


def resize_mask(mask: Tensor, height: int, width: int) -> Tensor:
    """A mask of any of the shapes [H, W], [B, H, W], [B, 1, H, W] as [B, 1, height, width] float32."""
    m = mask.float()
    if m.ndim == 2:
        m = m[None, None]
    elif m.ndim == 3:
        m = m[:, None]
    if m.shape[-2:] != (height, width):
        m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False)
    return m


def resolve_area(area: Sequence[Any] | None, height: int, width: int) -> Area | None:
    """An "area" value in latent pixels (h, w, y, x); percentages are taken of the latent's size."""
    if area is None:
        return None
    if len(area) == 5 and area[0] == "percentage":
        h, w, y, x = (float(v) for v in area[1:])
        return (max(1, round(h * height)), max(1, round(w * width)), round(y * height), round(x * width))
    if len(area) != 4:
        raise ValueError(f"conditioning 'area' {tuple(area)!r}: expected (h, w, y, x) or ('percentage', h, w, y, x)")
    return tuple(int(v) for v in area)  # type: ignore[return-value]


def mask_bounds(mask: Tensor) -> Area:
    """The bounding box (h, w, y, x) of where a [B, 1, h, w] mask is nonzero in any item, at least 8x8."""
    covered = mask.abs().amax(dim=(0, 1)) != 0
    if not bool(covered.any()):
        return (MIN_BOUNDS, MIN_BOUNDS, 0, 0)
    ys, xs = torch.where(covered)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
    return (max(MIN_BOUNDS, y1 - y0 + 1), max(MIN_BOUNDS, x1 - x0 + 1), y0, x0)


def resolve_entry(pair: Sequence[Any], height: int, width: int) -> list[Any]:
    """[cond, extras] with "area" in latent pixels and "mask" resized to [B, 1, height, width]."""
    extras = dict(pair[1]) if len(pair) > 1 and pair[1] else {}
    area = resolve_area(extras.get("area"), height, width)
    if extras.get("mask") is not None:
        extras["mask"] = resize_mask(extras["mask"], height, width)
        if extras.get("set_area_to_bounds"):
            area = mask_bounds(extras["mask"])
    if area is not None:
        extras["area"] = area
    return [pair[0], extras]


def area_box(area: Area | None, height: int, width: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of an area on a latent of this size (the whole latent for None)."""
    if area is None:
        return 0, height, 0, width
    h, w, y, x = (int(v) for v in area)
    y0, x0 = min(max(y, 0), height - 1), min(max(x, 0), width - 1)
    return y0, min(y0 + max(h, 1), height), x0, min(x0 + max(w, 1), width)


def entry_weight(extras: dict[str, Any], height: int, width: int, device: torch.device) -> Tensor:
    """The entry's weight on its area's box, [1 or B, 1, box h, box w] float32 (see the module docstring)."""
    area = extras.get("area")
    y0, y1, x0, x1 = area_box(area, height, width)
    strength = float(extras.get("strength", 1.0))
    mask = extras.get("mask")
    if mask is not None:
        m = mask[:, :, y0:y1, x0:x1].to(device) * float(extras.get("mask_strength", 1.0))
        return m * strength
    weight = torch.full((1, 1, y1 - y0, x1 - x0), strength, dtype=torch.float32, device=device)
    if area is not None:
        _fade_edges(weight, (y0, x0), (height, width))
    return weight


def _fade_edges(weight: Tensor, starts: tuple[int, int], full: tuple[int, int]) -> None:
    """Ramp the weight down to 1/rr towards every inner edge of the box, in place (rr = min(8, side // 4))."""
    for dim, (start, size) in enumerate(zip(starts, full)):
        side = weight.shape[2 + dim]
        rr = min(FUZZ, side // 4)
        if start != 0:
            for t in range(rr):
                weight.narrow(2 + dim, t, 1).mul_((1.0 / rr) * (t + 1))
        if start + side < size:
            for t in range(rr):
                weight.narrow(2 + dim, side - 1 - t, 1).mul_((1.0 / rr) * (t + 1))


# ---- step windows ---------------------------------------------------------------------------------------------


def _float32(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float32))


def percent_sigma(schedule: DiscreteSchedule, percent: float) -> float:
    """ComfyUI's `percent_to_sigma` of a discrete model, in its float32 arithmetic."""
    if percent <= 0.0:
        return NO_START
    if percent >= 1.0:
        return 0.0
    return float(schedule.sigma32(torch.tensor((1.0 - percent) * (schedule.num_timesteps - 1), dtype=torch.float32)))


def step_window(extras: dict[str, Any], sampling: Any) -> tuple[float, float] | None:
    """(sigma at start_percent, sigma at end_percent) of an entry by the model sampling's `percent_to_sigma`, or
    None when it acts at every step."""
    if "start_percent" not in extras and "end_percent" not in extras:
        return None
    start = sampling.percent_to_sigma(float(extras["start_percent"])) if "start_percent" in extras else math.inf
    end = sampling.percent_to_sigma(float(extras["end_percent"])) if "end_percent" in extras else -math.inf
    return start, end


def in_window(window: tuple[float, float] | None, sigma: float) -> bool:
    if window is None:
        return True
    s = _float32(sigma)
    return not (s > window[0] or s < window[1])


# ---- twins of area entries on the other side ------------------------------------------------------------------


def _inside(a: Area, outer: Area) -> bool:
    return all(a[2 + i] >= outer[2 + i] and a[i] + a[2 + i] <= outer[i] + outer[2 + i] for i in range(2))


def _smallest_holder(side: list[list[Any]], area: Area) -> list[Any] | None:
    """The entry of `side` with the smallest area holding `area`; else its first entry without an area."""
    smallest = None
    for pair in side:
        other = pair[1].get("area")
        if other is None:
            if smallest is None:
                smallest = pair
        elif _inside(area, other):
            held = smallest[1].get("area") if smallest is not None else None
            if smallest is None or held is None or math.prod(held[:2]) > math.prod(other[:2]):
                smallest = pair
    return smallest


def add_area_twins(sides: list[list[list[Any]]]) -> None:
    """Give every area entry a twin on each other side (in place; sides in ComfyUI's order: positive first)."""
    for k, side in enumerate(sides):
        for pair in side:
            area = pair[1].get("area")
            if area is None:
                continue
            for kk, other in enumerate(sides):
                if kk == k:
                    continue
                holder = _smallest_holder(other, area)
                if holder is None or holder[1].get("area") == area:
                    continue
                extras = {key: v for key, v in holder[1].items() if key not in SAMPLER_KEYS}
                extras.update({key: v for key, v in pair[1].items() if key in SAMPLER_KEYS})
                other.append([holder[0], extras])
