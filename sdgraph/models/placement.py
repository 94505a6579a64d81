"""Device placement: which managed modules are on the compute device, within its budget, and streaming.

`place(slot)` makes a slot's module resident on the compute device, moving the least recently used others to
the offload device (CPU memory) first when the budget would be exceeded. A module larger than the whole budget,
or every module with `lowvram`, is streamed instead: its weights rest in CPU memory and each layer's weights
visit the compute device only during that layer's forward.

`simulated=True` makes a CPU compute device behave as a separate one, for tests without a GPU: moves copy the
tensors (new storage, as a real transfer makes), its memory is counted apart from CPU RAM, and the stream hooks
really swap each layer's weights in and out.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator

import torch

from sdgraph.models.slots import ManagedModule, ManagerStats

GIB = 1 << 30
Carry = Callable[[torch.Tensor], torch.Tensor]


class Placement:
    def __init__(self, compute_device: torch.device, stats: ManagerStats, *, simulated: bool = False,
                 lowvram: bool = False, budget_bytes: int | None = None, reserve_bytes: int | None = None) -> None:
        if simulated and compute_device.type != "cpu":
            raise ValueError(f"simulated=True stands a CPU in for a separate device; got {compute_device}")
        self.compute_device = compute_device
        self.offload_device = torch.device("cpu")
        self.simulated = simulated
        self.lowvram = lowvram
        self.stats = stats
        self._budget = budget_bytes
        self._reserve = reserve_bytes
        self.slots: list[ManagedModule] = []

    @property
    def separate(self) -> bool:
        """Whether the compute device's memory is apart from the CPU RAM that holds offloaded weights."""
        return self.simulated or self.compute_device.type == "cuda"

    @property
    def budget_bytes(self) -> int:
        """Bytes of model weights allowed on the compute device at once."""
        if self._budget is not None:
            return self._budget
        if self.compute_device.type == "cuda":
            total = torch.cuda.get_device_properties(self.compute_device).total_memory
            reserve = self._reserve if self._reserve is not None else GIB + total // 10
            return max(0, total - reserve)
        return 1 << 62  # CPU / MPS share system memory: no eviction unless a budget is set

    @budget_bytes.setter
    def budget_bytes(self, value: int | None) -> None:
        self._budget = value

    # ---- queries ------------------------------------------------------------------------------------------

    def resident(self) -> list[ManagedModule]:
        return [s for s in self.slots if s.resident]

    def streamed(self) -> list[ManagedModule]:
        return [s for s in self.slots if s.streamed]

    def resident_bytes(self) -> int:
        return sum(s.nbytes for s in self.slots if s.resident)

    def ram_bytes(self, slot: ManagedModule) -> int:
        """Bytes of this slot held in CPU RAM: its weights unless they are on a separate device, and backups."""
        if not slot.loaded:
            return 0
        on_device = slot.resident and self.separate
        return (0 if on_device else slot.nbytes) + slot.backup_nbytes()

    # ---- moves --------------------------------------------------------------------------------------------

    def add(self, slot: ManagedModule) -> None:
        if slot not in self.slots:
            self.slots.append(slot)

    def place(self, slot: ManagedModule) -> None:
        """Make the slot's module usable on the compute device: resident if it fits the budget, else streamed."""
        self.add(slot)
        if self.lowvram or slot.nbytes > self.budget_bytes:
            self._stream(slot)
        else:
            self._make_resident(slot)

    def offload(self, slot: ManagedModule) -> None:
        if not slot.resident:
            return
        self._move(slot.module, self.offload_device)
        slot.resident = False
        self.stats.moves_to_offload += 1
        if self.compute_device.type == "cuda":
            torch.cuda.empty_cache()

    def release(self, slot: ManagedModule) -> None:
        """Take the slot out of placement before its weights are dropped: no hooks, nothing counted resident."""
        if slot.streamed:
            self._unstream(slot)
        slot.resident = False
        if slot in self.slots:
            self.slots.remove(slot)

    def unload_all(self) -> None:
        for slot in self.slots:
            if slot.streamed:
                self._unstream(slot)
            self.offload(slot)

    def _make_resident(self, slot: ManagedModule) -> None:
        if slot.streamed:
            self._unstream(slot)
        if slot.resident:
            return
        self._make_room(slot.nbytes, keep=slot)
        self._move(slot.module, self.compute_device)
        slot.resident = True
        self.stats.moves_to_device += 1

    def _make_room(self, needed: int, keep: ManagedModule) -> None:
        budget = self.budget_bytes
        others = sorted((s for s in self.slots if s.resident and s is not keep), key=lambda s: s.last_used)
        used = sum(s.nbytes for s in others)
        for victim in others:
            if used + needed <= budget:
                break
            self.offload(victim)
            used -= victim.nbytes

    def _move(self, module: torch.nn.Module, device: torch.device) -> None:
        if self.simulated:
            module._apply(lambda t: t.clone())  # a real transfer: the weights get new storage
        else:
            module.to(device)

    def _carry(self) -> Carry:
        if self.simulated:
            return lambda t: t.clone()
        device = self.compute_device
        return lambda t: t.to(device, non_blocking=True)

    # ---- streaming ----------------------------------------------------------------------------------------

    def _stream(self, slot: ManagedModule) -> None:
        self.offload(slot)
        self.stats.streamed_uses += 1
        if slot.streamed:
            return
        # Hooks go in even when both devices are the CPU: one code path, which a CPU-only test can exercise.
        carry = self._carry()
        for sub in slot.module.modules():
            if next(_own_tensors(sub), None) is None:
                continue
            pre, post = _visit_hooks(carry, self.stats)
            slot.hooks.append(sub.register_forward_pre_hook(pre))
            slot.hooks.append(sub.register_forward_hook(post))
        slot.streamed = True

    def _unstream(self, slot: ManagedModule) -> None:
        for hook in slot.hooks:
            hook.remove()
        slot.hooks.clear()
        slot.streamed = False
        self._move(slot.module, self.offload_device)


def _own_tensors(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    params = ((n, p.data) for n, p in module._parameters.items() if p is not None)
    buffers = ((n, b) for n, b in module._buffers.items() if b is not None)
    return itertools.chain(params, buffers)


def _put(module: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    if name in module._parameters:
        module._parameters[name].data = tensor
    else:
        module._buffers[name] = tensor


def _visit_hooks(carry: Carry, stats: ManagerStats) -> tuple[Callable[..., None], Callable[..., None]]:
    """Forward hooks that bring one layer's own tensors to the compute device and put the resting ones back.

    The resting (CPU) tensors are kept and restored, not copied back: weights do not change in a forward.
    """
    resting: dict[str, torch.Tensor] = {}

    def restore(module: torch.nn.Module) -> None:
        for name, tensor in resting.items():
            _put(module, name, tensor)
        resting.clear()

    def pre(module: torch.nn.Module, args: Any) -> None:
        restore(module)  # a forward that raised never ran `post`
        stats.layer_visits += 1
        for name, tensor in list(_own_tensors(module)):
            resting[name] = tensor
            _put(module, name, carry(tensor))

    def post(module: torch.nn.Module, args: Any, output: Any) -> None:
        restore(module)

    return pre, post
