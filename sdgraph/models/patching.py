"""Weight patches (LoRA, merges, scaling): make a managed module carry exactly the requested patches, restoring
originals first."""
from __future__ import annotations

from typing import Any, Iterable, Protocol

import torch

from sdgraph.models.slots import ManagedModule, ManagerStats


class WeightPatch(Protocol):
    """What `acquire` applies: a stable key, the parameters it changes, and how it changes each one in place.

    `apply(name, weight, original)` gets the live parameter tensor (already holding the earlier patches' work)
    and the parameter's unpatched value; it writes the result into `weight`. A patch of strength 0 is skipped.
    """

    strength: float

    @property
    def key(self) -> Any: ...

    def targets(self) -> Iterable[str]: ...

    def apply(self, name: str, weight: torch.Tensor, original: torch.Tensor) -> None: ...


@torch.no_grad()
def apply_patches(slot: ManagedModule, patches: tuple[WeightPatch, ...], backup_device: torch.device,
                  stats: ManagerStats) -> None:
    """Restore the weights earlier patches changed, then apply each patch; original weights are kept
    (on `backup_device`) the first time a patch touches them. A slot with a `value_dtype` gets its patched
    weights rounded to that precision once every patch is applied."""
    wanted = tuple(p.key for p in patches)
    if wanted == slot.applied:
        return
    stats.patch_changes += 1
    params = dict(slot.module.named_parameters())
    for name, original in slot.backups.items():
        params[name].data.copy_(original.to(params[name].device))
    for patch in patches:
        for name in patch.targets():
            weight = params.get(name)
            if weight is None:
                continue
            if name not in slot.backups:
                slot.backups[name] = weight.detach().to(backup_device, copy=True)
            patch.apply(name, weight.data, slot.backups[name])
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
