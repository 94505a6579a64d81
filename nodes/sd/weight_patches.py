"""Key-addressed weight patches in ComfyUI's shape: what `add_patches` records and how a patched weight is computed.

A patch entry is ComfyUI's tuple `(strength_patch, value, strength_model, offset, function)`. For each entry, in
order, on a float32 copy of the weight (or its `offset` slice: (dim, start, length)):

    weight *= strength_model
    weight += function(strength_patch * diff)        # skipped when strength_patch is 0

where `value` gives the diff: `(tensor,)` or `("diff", (tensor, ...))`; `("lora", (up, down, alpha, mid, dora_scale,
reshape))` is `alpha / rank * up @ down` (scale 1 without alpha; what `comfy.lora.load_lora` gives packs; the LoCon
mid factor, DoRA and reshape are refused); `("set", (tensor,))` replaces the weight;
`("model_as_lora", (target,))` adds target - original; a list `[(weight, convert), *entries]` (what
`get_key_patches` returns: another model's weight with its own patches) is computed first and used as the diff.
So a merge at ratio r is `add_patches(other, 1 - r, r)`: weight * r + other * (1 - r).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from sdgraph.models.patching import lora_delta

Entry = tuple[float, Any, float, Any, Callable[[torch.Tensor], torch.Tensor] | None]
_TOKENS = itertools.count(1)


def new_token() -> int:
    """A process-unique identity for one add_patches call (so the manager knows when patches change)."""
    return next(_TOKENS)


@dataclass(frozen=True, eq=False)
class KeyPatchSet:
    """The entries of one add_patches call, keyed by the managed module's own parameter names."""

    entries: dict[str, tuple[Entry, ...]] = field(hash=False)
    token: int = field(default_factory=new_token)
    strength: float = 1.0  # the manager skips strength-0 patches; these carry their strengths per entry

    @property
    def key(self) -> tuple[str, int]:
        return ("weights", self.token)

    def targets(self) -> list[str]:
        return list(self.entries)

    def apply(self, name: str, weight: torch.Tensor, original: torch.Tensor) -> None:
        result = patched_weight(weight.float(), self.entries[name], original, name)
        weight.copy_(result.to(weight.dtype))


def patched_weight(weight: torch.Tensor, entries: tuple[Entry, ...] | list[Entry], original: torch.Tensor,
                   key: str) -> torch.Tensor:
    """The weight after `entries`, computed in float32 (`weight` may be modified in place)."""
    for strength, value, strength_model, offset, function in entries:
        target = weight.narrow(*offset) if offset is not None else weight
        if strength_model != 1.0:
            target.mul_(strength_model)
        if strength != 0.0:
            _add(target, strength, value, original, key, function or (lambda t: t))
    return weight


def _add(target: torch.Tensor, strength: float, value: Any, original: torch.Tensor, key: str,
         function: Callable[[torch.Tensor], torch.Tensor]) -> None:
    kind, data = _kind(value, key)
    if kind == "list":
        base, convert = data[0]
        other = patched_weight(convert(base.to(target.device, torch.float32).clone()), data[1:], base, key)
        diff = other
    elif kind == "set":
        target.copy_(data[0].to(target.device, torch.float32))
        return
    elif kind == "model_as_lora":
        diff = data[0].to(target.device, torch.float32) - original.to(target.device, torch.float32)
    elif kind == "lora":
        diff = _lora_diff(data, target, key)
    else:
        diff = data[0]
    if not isinstance(diff, torch.Tensor):
        raise ValueError(f"weight patch for {key}: a diff needs a tensor, got {type(diff).__name__}")
    if diff.shape != target.shape:
        raise ValueError(f"weight patch for {key}: shape {tuple(diff.shape)} does not fit the weight's "
                         f"{tuple(target.shape)}")
    target.add_(function(strength * diff.to(target.device, torch.float32)))


def _lora_diff(data: tuple[Any, ...], target: torch.Tensor, key: str) -> torch.Tensor:
    up, down, alpha = data[0], data[1], data[2] if len(data) > 2 else None
    extras = [name for name, item in zip(("mid", "dora_scale", "reshape"), data[3:6]) if item is not None]
    if extras:
        raise ValueError(f"weight patch for {key}: a LoRA with {', '.join(extras)} is not supported "
                         "(plain up/down LoRA and LoCon only)")
    scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
    return lora_delta(up, down, target.shape, target.device) * scale


def _kind(value: Any, key: str) -> tuple[str, Any]:
    if isinstance(value, list):
        return "list", value
    if isinstance(value, tuple) and len(value) == 1:
        return "diff", value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        if value[0] in ("diff", "set", "model_as_lora", "lora"):
            return value[0], value[1]
        raise ValueError(f"weight patch for {key}: patch type {value[0]!r} is not supported "
                         "(supported: diff, lora, set, model_as_lora, another model's key patches)")
    raise ValueError(f"weight patch for {key}: {type(value).__name__} is not a patch value")


def add_key_patches(names: dict[str, str], patches: dict[Any, Any], strength_patch: float,
                    strength_model: float) -> tuple[KeyPatchSet | None, list[Any]]:
    """ComfyUI's add_patches over a key map {comfy key: parameter name}: the patch set for the keys that exist
    (None when none does) and the keys it took, as given (a key may be (key, offset[, function]))."""
    entries: dict[str, list[Entry]] = {}
    taken: list[Any] = []
    for given, value in patches.items():
        key, offset, function = (given, None, None) if isinstance(given, str) else \
            (given[0], given[1], given[2] if len(given) > 2 else None)
        name = names.get(key)
        if name is None:
            continue
        entries.setdefault(name, []).append((strength_patch, value, strength_model, offset, function))
        taken.append(given)
    if not entries:
        return None, taken
    return KeyPatchSet({name: tuple(items) for name, items in entries.items()}), taken
