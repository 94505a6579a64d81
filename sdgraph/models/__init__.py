"""The model manager: load a model file once, keep its modules on the fastest device, bound what stays in RAM.

- `load(path, kind, loader)` reads a model file (or diffusers folder) once and returns the same object while the
  file is unchanged (`files`: key of resolved path, size and mtime of every file, plus the loader's options).
- `manage(module, name, role)` puts an `nn.Module` under management as a `ManagedModule` (casting it to the
  compute dtype of its role); `acquire(slot, patches)` returns it on the compute device, moving the least
  recently used other modules to CPU memory first when the device budget would be exceeded (`placement`), and
  applies the requested weight patches (LoRA) so that the module holds exactly those (`patching`).
- A module larger than the whole device budget, or every module with `lowvram=True`, is streamed: its weights
  stay in CPU memory and each layer's weights visit the compute device only during that layer's forward.
- RAM budget (`ram_budget_bytes`, default half the memory available at start, `memory`): what loaded models hold
  in CPU memory (weights not on a separate compute device, LoRA backups and factors) is kept within it by
  dropping the least recently used files' weights. A dropped model's objects stay valid (the executor's output
  cache may hold them): their modules' tensors are freed (moved to the meta device) and read from disk again when
  next acquired or loaded. Models used by the running prompt (`prompt_scope`) are never dropped; outside a
  prompt only the model being loaded or acquired is protected.
- `stats` counts disk loads, moves between devices, streamed uses and RAM drops, so tests can assert that a
  second run of a workflow reads nothing from disk and moves nothing.

Devices: cuda > mps > cpu, or cpu when forced; `simulated_device=True` makes a CPU compute device act as a
separate one (see `placement`). Precision: fp16 on a GPU (bf16 or fp32 for the VAE, whose fp16 activations
overflow; fp32 for upscale models, as in ComfyUI), fp32 on the CPU; the `precision` option overrides the choice
for UNets and text encoders.
"""
from __future__ import annotations

import gc
import itertools
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from sdgraph.fast_path import FastPath
from sdgraph.models.cast_at_use import store_narrow
from sdgraph.models.files import FileCache, FileEntry, file_key, loose_tensor_bytes, path_bytes
from sdgraph.models.memory import default_ram_budget, return_freed_memory, victims
from sdgraph.models.patching import WeightPatch, apply_patches, lora_delta
from sdgraph.models.placement import GIB, Placement
from sdgraph.models.slots import ManagedModule, ManagerStats, module_nbytes

ROLES = ("unet", "text_encoder", "vae", "controlnet", "upscale_model", "other")
KEEP_DROPPED = 32  # dropped files remembered, so a load of one returns its same (refilled) objects
__all__ = ["GIB", "ROLES", "ManagedModule", "ManagerStats", "ModelManager", "ModelReloadError", "WeightPatch",
           "file_key", "lora_delta", "module_nbytes", "pick_device"]


class ModelReloadError(RuntimeError):
    """A model whose weights were dropped can not be read again as it was loaded."""


def pick_device(force_cpu: bool = False) -> torch.device:
    if force_cpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


class ModelManager:
    """Loads, caches, places and patches models. One per process (held by the executor's services)."""

    def __init__(self, device: str | torch.device | None = None, *, force_cpu: bool = False,
                 lowvram: bool = False, budget_bytes: int | None = None, reserve_bytes: int | None = None,
                 precision: str = "auto", simulated_device: bool = False,
                 ram_budget_bytes: int | None = None, fast_path: FastPath | None = None) -> None:
        compute = torch.device(device) if device is not None else pick_device(force_cpu)
        self.stats = ManagerStats()
        self.placement = Placement(compute, self.stats, simulated=simulated_device, lowvram=lowvram,
                                   budget_bytes=budget_bytes, reserve_bytes=reserve_bytes)
        self.precision = precision
        self.fast_path = fast_path or FastPath()  # applied to UNets by the nodes that run them
        self.ram_budget_bytes = default_ram_budget() if ram_budget_bytes is None else ram_budget_bytes
        self.files = FileCache()
        self._loading: list[ManagedModule] | None = None
        self._clock = itertools.count(1)
        self._lock = threading.RLock()
        self._scopes = 0
        self._pinned: set[FileEntry] = set()

    # ---- configuration ------------------------------------------------------------------------------------

    @property
    def compute_device(self) -> torch.device:
        return self.placement.compute_device

    @property
    def offload_device(self) -> torch.device:
        return self.placement.offload_device

    @property
    def lowvram(self) -> bool:
        return self.placement.lowvram

    @lowvram.setter
    def lowvram(self, value: bool) -> None:
        self.placement.lowvram = value

    @property
    def budget_bytes(self) -> int:
        """Bytes of model weights allowed on the compute device at once."""
        return self.placement.budget_bytes

    @budget_bytes.setter
    def budget_bytes(self, value: int | None) -> None:
        self.placement.budget_bytes = value

    def dtype_for_role(self, role: str) -> torch.dtype:
        if self.compute_device.type == "cpu" or role == "upscale_model":  # ComfyUI runs upscale models in fp32
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
        path = Path(path)
        identity = file_key(path)
        with self._lock:
            entry = self.files.current((kind, str(path.resolve()), options))
            if entry is not None and entry.identity == identity:
                self._touch(entry)
                if not entry.loaded:
                    self._reload(entry)
                return entry.obj
            if entry is not None and entry not in self._pinned:
                self._drop(entry, forget=True)  # the file changed: its old weights are of no further use
            entry = FileEntry(kind, path, options, identity, loader)
            entry.obj, entry.slots = self._read(entry)
            entry.loose_bytes = 0 if entry.slots else loose_tensor_bytes(entry.obj)
            for slot in entry.slots:
                slot.entry = entry
                self.placement.add(slot)
            self.files.add(entry)
            self._touch(entry)
            self._enforce_ram(keep=entry)
            return entry.obj

    def manage(self, module: torch.nn.Module, name: str, role: str = "other",
               stored_dtype: torch.dtype | None = None) -> ManagedModule:
        """Take a freshly loaded (CPU) module under management, cast to its role's compute dtype; with an fp8
        `stored_dtype` its weights stay in that dtype and each layer's are widened as it runs (`cast_at_use`)."""
        dtype = self.dtype_for_role(role)
        if stored_dtype is None:
            module.to(device=self.offload_device, dtype=dtype)
        else:
            module.to(device=self.offload_device)
            store_narrow(module, stored_dtype, dtype)
        module.eval().requires_grad_(False)
        slot = ManagedModule(self, name, module, role, dtype, module_nbytes(module))
        with self._lock:
            if self._loading is not None:
                self._loading.append(slot)  # `load` registers it once the whole file is read
            else:
                self.placement.add(slot)
        return slot

    def _read(self, entry: FileEntry) -> tuple[Any, list[ManagedModule]]:
        """Run the entry's loader, making room in RAM for the file first; the object and the slots it made."""
        self._enforce_ram(keep=entry, incoming=path_bytes(entry.path))
        outer, self._loading = self._loading, []
        try:
            obj = entry.loader(entry.path)
            slots = self._loading
        finally:
            self._loading = outer
        self.stats.disk_loads += 1
        return obj, slots

    def _reload(self, entry: FileEntry) -> None:
        """Fill a dropped entry's slots again from its file; its objects stay the same objects."""
        if entry.retired or not entry.path.exists() or file_key(entry.path) != entry.identity:
            raise ModelReloadError(f"{entry.describe()}: its weights were dropped to stay within the RAM budget and "
                                   "the file has changed since it was loaded; run its loader node again")
        _, fresh = self._read(entry)
        if [s.name for s in fresh] != [s.name for s in entry.slots]:
            raise ModelReloadError(f"{entry.describe()}: reading it again built modules "
                                   f"{[s.name for s in fresh]}, not {[s.name for s in entry.slots]}")
        for old, new in zip(entry.slots, fresh):
            old.refill(new)
            self.placement.add(old)
        self.files.restore(entry)  # it may have been forgotten while only a handle held it

    # ---- placement ----------------------------------------------------------------------------------------

    def acquire(self, slot: ManagedModule, patches: Iterable[WeightPatch] = ()) -> torch.nn.Module:
        """The slot's module ready to run on the compute device, carrying exactly `patches`."""
        with self._lock:
            if slot.entry is not None:
                self._touch(slot.entry)
                if not slot.loaded:
                    self._reload(slot.entry)
            slot.last_used = next(self._clock)
            self.placement.place(slot)
            apply_patches(slot, tuple(p for p in patches if p.strength != 0), self.offload_device, self.stats)
            self._enforce_ram(keep=slot.entry)  # offloading others or backing up weights may have filled RAM
            return slot.module

    def original_weights(self, slot: ManagedModule) -> dict[str, torch.Tensor]:
        """The slot's parameters without any weight patch (the kept originals of patched ones), wherever they
        rest; a slot the RAM budget dropped is read again first."""
        with self._lock:
            if slot.entry is not None and not slot.loaded:
                self._reload(slot.entry)
            return {name: slot.backups.get(name, param.detach()) for name, param in slot.module.named_parameters()}

    def resident_bytes(self) -> int:
        return self.placement.resident_bytes()

    def resident(self) -> list[ManagedModule]:
        return self.placement.resident()

    def streamed(self) -> list[ManagedModule]:
        return self.placement.streamed()

    # ---- the RAM budget -----------------------------------------------------------------------------------

    def ram_bytes(self) -> int:
        """Bytes the loaded models hold in CPU RAM: weights not on a separate device, LoRA backups and factors."""
        with self._lock:
            slots = sum(self.placement.ram_bytes(s) for s in self.placement.slots)
            return slots + sum(e.loose_bytes for e in self.files.entries)

    def _entry_ram_bytes(self, entry: FileEntry) -> int:
        return entry.loose_bytes + sum(self.placement.ram_bytes(s) for s in entry.slots)

    @contextmanager
    def prompt_scope(self) -> Iterator[None]:
        """While a prompt runs, every model it loads or uses stays loaded; the RAM budget is enforced after it."""
        with self._lock:
            self._scopes += 1
        try:
            yield
        finally:
            with self._lock:
                self._scopes -= 1
                if self._scopes == 0:
                    self._pinned.clear()
                    self._enforce_ram()

    def _touch(self, entry: FileEntry) -> None:
        entry.last_used = next(self._clock)
        if self._scopes:
            self._pinned.add(entry)

    def _enforce_ram(self, keep: FileEntry | None = None, incoming: int = 0) -> None:
        """Drop the least recently used models (never `keep`, nor any the running prompt used) until the RAM
        they hold, plus `incoming` bytes about to be read, fits the budget."""
        used = self.ram_bytes() + incoming
        if used <= self.ram_budget_bytes:
            return
        order = sorted((e for e in self.files.entries if e is not keep and e not in self._pinned),
                       key=lambda e: e.last_used)
        dropped = victims(((e, self._entry_ram_bytes(e)) for e in order), used, self.ram_budget_bytes)
        for entry in dropped:
            self._drop(entry)
        if dropped:
            return_freed_memory()

    def _drop(self, entry: FileEntry, forget: bool = False) -> None:
        """Free an entry's weights; a LoRA-like entry without modules, or a retired one, is forgotten."""
        on_gpu = any(s.resident for s in entry.slots) and self.compute_device.type == "cuda"
        for slot in entry.slots:
            self.placement.release(slot)
            slot.drop_weights()
        if forget or entry.retired or not entry.slots:
            self.files.remove(entry)
        self.files.prune_dropped(KEEP_DROPPED)
        self.stats.ram_drops += 1
        if on_gpu:
            torch.cuda.empty_cache()

    # ---- requests -----------------------------------------------------------------------------------------

    def unload_all(self) -> None:
        """Move every model off the compute device (they stay loaded in CPU memory, within its budget)."""
        with self._lock:
            self.placement.unload_all()
            self._enforce_ram()

    def free_memory(self) -> None:
        """Drop every model's weights (objects still referenced elsewhere reload when used again)."""
        with self._lock:
            self.placement.unload_all()
            for entry in list(self.files.entries):
                if entry not in self._pinned:
                    self._drop(entry)
            for slot in [s for s in self.placement.slots if s.entry is None]:
                self.placement.release(slot)  # managed directly: forgotten here, taken back if acquired again
        gc.collect()
        return_freed_memory()
        if self.compute_device.type == "cuda":
            torch.cuda.empty_cache()
