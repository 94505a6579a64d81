"""The model manager: load a model file once, keep its modules on the fastest device, evict least recently used.

- `load(path, kind, loader)` reads a model file (or diffusers folder) once and returns the same object while the
  file is unchanged (key: resolved path, size and mtime of every file, plus the loader's options).
- `manage(module, name, role)` puts an `nn.Module` under management as a `ManagedModule` (casting it to the
  compute dtype of its role); `acquire(slot, patches)` returns it on the compute device, moving the least
  recently used other modules to CPU memory first when the memory budget would be exceeded, and applies the
  requested weight patches (LoRA) so that the module holds exactly those.
- A module larger than the whole budget, or every module with `lowvram=True`, is streamed: its weights stay
  in CPU memory and each layer's weights visit the compute device only during that layer's forward.
- `stats` counts disk loads, moves between devices and streamed uses, so tests can assert that a second run of
  a workflow reads nothing from disk and moves nothing.

Devices: cuda > mps > cpu, or cpu when forced. Precision: fp16 on a GPU (bf16 or fp32 for the VAE, whose fp16
activations overflow), fp32 on the CPU; the `precision` option overrides the choice for UNets and text encoders.
"""
from __future__ import annotations

import gc
import itertools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import torch

GIB = 1 << 30
ROLES = ("unet", "text_encoder", "vae", "controlnet", "other")


class WeightPatch(Protocol):
    """What `acquire` applies: a stable key and weight deltas (see nodes/sd/model_objects.LoraPatch)."""

    strength: float
    deltas: dict[str, tuple[torch.Tensor, torch.Tensor, float]]

    @property
    def key(self) -> Any: ...


@dataclass
class ManagerStats:
    disk_loads: int = 0
    moves_to_device: int = 0
    moves_to_offload: int = 0
    streamed_uses: int = 0
    layer_visits: int = 0  # a streamed layer's weights brought to the compute device for one forward
    patch_changes: int = 0

    @property
    def moves(self) -> int:
        return self.moves_to_device + self.moves_to_offload

    def snapshot(self) -> dict[str, int]:
        return {"disk_loads": self.disk_loads, "moves_to_device": self.moves_to_device,
                "moves_to_offload": self.moves_to_offload, "streamed_uses": self.streamed_uses,
                "layer_visits": self.layer_visits, "patch_changes": self.patch_changes}


@dataclass(eq=False)
class ManagedModule:
    """One module under the manager's care: where it is, when it was last used, which patches it carries."""

    manager: "ModelManager"
    name: str
    module: torch.nn.Module
    role: str
    dtype: torch.dtype
    nbytes: int
    resident: bool = False  # on the compute device (whole)
    streamed: bool = False  # stream hooks installed
    last_used: int = 0
    applied: tuple[Any, ...] = ()
    backups: dict[str, torch.Tensor] = field(default_factory=dict)
    hooks: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"ManagedModule({self.name!r}, {self.role}, {self.nbytes / 2**20:.1f} MiB, resident={self.resident})"


def pick_device(force_cpu: bool = False) -> torch.device:
    if force_cpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def file_key(path: Path) -> tuple[Any, ...]:
    """Identity of a model file or folder as it is now: path, and size and mtime of each file."""
    path = path.resolve()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return (str(path), tuple((p.relative_to(path).as_posix(), *_size_mtime(p)) for p in files))
    return (str(path), _size_mtime(path))


def _size_mtime(path: Path) -> tuple[int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns)


def module_nbytes(module: torch.nn.Module) -> int:
    tensors = itertools.chain(module.parameters(), module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


class ModelManager:
    """Loads, caches, places and patches models. One per process (held by the executor's services)."""

    def __init__(self, device: str | torch.device | None = None, *, force_cpu: bool = False,
                 lowvram: bool = False, budget_bytes: int | None = None, reserve_bytes: int | None = None,
                 precision: str = "auto") -> None:
        self.compute_device = torch.device(device) if device is not None else pick_device(force_cpu)
        self.offload_device = torch.device("cpu")
        self.lowvram = lowvram
        self.precision = precision
        self._budget = budget_bytes
        self._reserve = reserve_bytes
        self.stats = ManagerStats()
        self._files: dict[tuple[Any, ...], tuple[tuple[Any, ...], Any, list[ManagedModule]]] = {}
        self._slots: list[ManagedModule] = []
        self._loading: list[ManagedModule] | None = None
        self._clock = itertools.count(1)
        self._lock = threading.RLock()

    # ---- configuration ------------------------------------------------------------------------------------

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

    def dtype_for_role(self, role: str) -> torch.dtype:
        if self.compute_device.type == "cpu":
            return torch.float32
        if self.precision in ("fp32", "fp16", "bf16") and role != "vae":
            return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        if role == "vae":
            cuda_bf16 = self.compute_device.type == "cuda" and torch.cuda.is_bf16_supported()
            return torch.bfloat16 if cuda_bf16 else torch.float32
        return torch.float16

    def dtype_for(self, slot: ManagedModule) -> torch.dtype:
        return slot.dtype

    # ---- loading ------------------------------------------------------------------------------------------

    def load(self, path: Path, kind: str, loader: Callable[[Path], Any], options: tuple[Any, ...] = ()) -> Any:
        """The object `loader(path)` builds, loaded once and reused while the file is unchanged."""
        cache_key = (kind, str(Path(path).resolve()), options)
        current = file_key(Path(path))
        with self._lock:
            cached = self._files.get(cache_key)
            if cached is not None and cached[0] == current:
                return cached[1]
            if cached is not None:
                self._forget(cached[2])
            self._loading = []
            try:
                obj = loader(Path(path))
                self.stats.disk_loads += 1
                self._files[cache_key] = (current, obj, self._loading)
            finally:
                self._loading = None
            return obj

    def manage(self, module: torch.nn.Module, name: str, role: str = "other") -> ManagedModule:
        """Take a freshly loaded (CPU) module under management, cast to its role's compute dtype."""
        dtype = self.dtype_for_role(role)
        module.to(device=self.offload_device, dtype=dtype)
        module.eval().requires_grad_(False)
        slot = ManagedModule(self, name, module, role, dtype, module_nbytes(module))
        with self._lock:
            self._slots.append(slot)
            if self._loading is not None:
                self._loading.append(slot)
        return slot

    # ---- placement ----------------------------------------------------------------------------------------

    def acquire(self, slot: ManagedModule, patches: Iterable[WeightPatch] = ()) -> torch.nn.Module:
        """The slot's module ready to run on the compute device, carrying exactly `patches`."""
        with self._lock:
            if slot not in self._slots:
                self._slots.append(slot)
            slot.last_used = next(self._clock)
            if self.lowvram or self._over_budget_alone(slot):
                self._stream(slot)
            else:
                self._make_resident(slot)
            self._apply_patches(slot, tuple(p for p in patches if p.strength != 0))
            return slot.module

    def resident_bytes(self) -> int:
        return sum(s.nbytes for s in self._slots if s.resident)

    def resident(self) -> list[ManagedModule]:
        return [s for s in self._slots if s.resident]

    def streamed(self) -> list[ManagedModule]:
        return [s for s in self._slots if s.streamed]

    def _over_budget_alone(self, slot: ManagedModule) -> bool:
        return slot.nbytes > self.budget_bytes

    def _make_resident(self, slot: ManagedModule) -> None:
        if slot.streamed:
            self._unstream(slot)
        if slot.resident:
            return
        self._make_room(slot.nbytes, keep=slot)
        slot.module.to(self.compute_device)
        slot.resident = True
        self.stats.moves_to_device += 1

    def _make_room(self, needed: int, keep: ManagedModule) -> None:
        budget = self.budget_bytes
        others = sorted((s for s in self._slots if s.resident and s is not keep), key=lambda s: s.last_used)
        used = sum(s.nbytes for s in others)
        for victim in others:
            if used + needed <= budget:
                break
            self._offload(victim)
            used -= victim.nbytes

    def _offload(self, slot: ManagedModule) -> None:
        if not slot.resident:
            return
        slot.module.to(self.offload_device)
        slot.resident = False
        self.stats.moves_to_offload += 1
        if self.compute_device.type == "cuda":
            torch.cuda.empty_cache()

    def _stream(self, slot: ManagedModule) -> None:
        self._offload(slot)
        self.stats.streamed_uses += 1
        if slot.streamed:
            return
        # Hooks go in even when both devices are the CPU: one code path, which a CPU-only test can exercise.
        for sub in slot.module.modules():
            if next(itertools.chain(sub.parameters(recurse=False), sub.buffers(recurse=False)), None) is None:
                continue
            slot.hooks.append(sub.register_forward_pre_hook(_mover(self.compute_device, self.stats)))
            slot.hooks.append(sub.register_forward_hook(_returner(self.offload_device)))
        slot.streamed = True

    def _unstream(self, slot: ManagedModule) -> None:
        for hook in slot.hooks:
            hook.remove()
        slot.hooks.clear()
        slot.streamed = False
        slot.module.to(self.offload_device)

    # ---- weight patches -----------------------------------------------------------------------------------

    @torch.no_grad()
    def _apply_patches(self, slot: ManagedModule, patches: tuple[WeightPatch, ...]) -> None:
        wanted = tuple(p.key for p in patches)
        if wanted == slot.applied:
            return
        self.stats.patch_changes += 1
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
                    slot.backups[pname] = weight.detach().to(self.offload_device, copy=True)
                delta = _lora_delta(up, down, weight.shape, weight.device) * (scale * patch.strength)
                weight.data.add_(delta.to(weight.dtype))
        slot.applied = wanted

    # ---- requests -----------------------------------------------------------------------------------------

    def unload_all(self) -> None:
        """Move every model off the compute device (they stay loaded in CPU memory)."""
        with self._lock:
            for slot in self._slots:
                if slot.streamed:
                    self._unstream(slot)
                self._offload(slot)

    def free_memory(self) -> None:
        """Unload everything and forget loaded files; objects still referenced elsewhere stay usable."""
        with self._lock:
            self.unload_all()
            self._files.clear()
            self._slots.clear()
        gc.collect()
        if self.compute_device.type == "cuda":
            torch.cuda.empty_cache()

    def _forget(self, slots: list[ManagedModule]) -> None:
        for slot in slots:
            self._offload(slot)
            if slot in self._slots:
                self._slots.remove(slot)


def _lora_delta(up: torch.Tensor, down: torch.Tensor, shape: torch.Size, device: torch.device) -> torch.Tensor:
    up = up.to(device=device, dtype=torch.float32)
    down = down.to(device=device, dtype=torch.float32)
    if len(shape) == 4 and down.dim() == 4 and down.shape[2:] != (1, 1):
        # conv LoRA with a spatial down kernel: the up projection is 1x1
        delta = torch.einsum("or,rikl->oikl", up.flatten(1), down)
    else:
        delta = up.flatten(1) @ down.flatten(1)
    return delta.reshape(shape)


def _mover(device: torch.device, stats: ManagerStats) -> Callable[..., None]:
    def hook(module: torch.nn.Module, args: Any) -> None:
        stats.layer_visits += 1
        module._apply(lambda t: t.to(device, non_blocking=True), recurse=False)
    return hook


def _returner(device: torch.device) -> Callable[..., None]:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        module._apply(lambda t: t.to(device), recurse=False)
    return hook
