"""Weight patches (LoRA): make a managed module carry exactly the requested patches, restoring originals first."""
from __future__ import annotations

from typing import Any, Protocol

import torch

from sdgraph.models.cast_at_use import is_narrow, widened_sum
from sdgraph.models.slots import ManagedModule, ManagerStats


class WeightPatch(Protocol):
    """What `acquire` applies: a stable key and weight deltas (see nodes/sd/model_objects.LoraPatch)."""

    strength: float
    deltas: dict[str, tuple[torch.Tensor, torch.Tensor, float]]

    @property
    def key(self) -> Any: ...


@torch.no_grad()
def apply_patches(slot: ManagedModule, patches: tuple[WeightPatch, ...], backup_device: torch.device,
                  stats: ManagerStats) -> None:
    """Restore the weights earlier patches changed, then add each patch's deltas; original weights are kept
    (on `backup_device`) the first time a patch touches them. A slot with a `value_dtype` gets its patched
    weights rounded to that precision once every patch is added."""
    wanted = tuple(p.key for p in patches)
    if wanted == slot.applied:
        return
    stats.patch_changes += 1
    params = dict(slot.module.named_parameters())
    for name, original in slot.backups.items():
        params[name].data.copy_(original.to(params[name].device))
    for patch in patches:
        for module_name, (up, down, scale) in patch.deltas.items():
            pname = f"{module_name}.weight"
            weight = params.get(pname)
            if weight is None:
                continue
            if pname not in slot.backups:
                slot.backups[pname] = weight.detach().to(backup_device, copy=True)
            delta = lora_delta(up, down, weight.shape, weight.device) * (scale * patch.strength)
            if is_narrow(weight.dtype):  # fp8 has no arithmetic of its own
                weight.data.copy_(widened_sum(weight.data, delta))
            else:
                weight.data.add_(delta.to(weight.dtype))
    if slot.value_dtype is not None and patches:
        for name in slot.backups:
            params[name].data.copy_(params[name].data.to(slot.value_dtype))
    slot.applied = wanted


def lora_delta(up: torch.Tensor, down: torch.Tensor, shape: torch.Size, device: torch.device) -> torch.Tensor:
    up = up.to(device=device, dtype=torch.float32)
    down = down.to(device=device, dtype=torch.float32)
    if len(shape) == 4 and down.dim() == 4 and down.shape[2:] != (1, 1):
        # conv LoRA with a spatial down kernel: the up projection is 1x1
        delta = torch.einsum("or,rikl->oikl", up.flatten(1), down)
    else:
        delta = up.flatten(1) @ down.flatten(1)
    return delta.reshape(shape)
