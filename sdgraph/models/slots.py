"""What the model manager tracks: one managed module (a slot) and the counters tests read (`ManagerStats`)."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from sdgraph.models import ModelManager
    from sdgraph.models.files import FileEntry


@dataclass
class ManagerStats:
    disk_loads: int = 0  # model files read (a file read again after the RAM budget dropped it counts again)
    moves_to_device: int = 0
    moves_to_offload: int = 0
    streamed_uses: int = 0
    layer_visits: int = 0  # a streamed layer's weights brought to the compute device for one forward
    patch_changes: int = 0
    ram_drops: int = 0  # loaded files whose weights the RAM budget dropped

    @property
    def moves(self) -> int:
        return self.moves_to_device + self.moves_to_offload

    def snapshot(self) -> dict[str, int]:
        return {"disk_loads": self.disk_loads, "moves_to_device": self.moves_to_device,
                "moves_to_offload": self.moves_to_offload, "streamed_uses": self.streamed_uses,
                "layer_visits": self.layer_visits, "patch_changes": self.patch_changes, "ram_drops": self.ram_drops}


@dataclass(eq=False)
class ManagedModule:
    """One module under the manager's care: where it is, when it was last used, which patches it carries.

    `entry` is the file it came from; a slot with one can have its weights dropped (`loaded` False: the module's
    tensors are on the meta device, its structure and config stay) and filled again from that file.
    """

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
    entry: "FileEntry | None" = None
    loaded: bool = True
    value_dtype: torch.dtype | None = None  # its weights hold values of this precision: patched ones are rounded to it

    def __repr__(self) -> str:
        return f"ManagedModule({self.name!r}, {self.role}, {self.nbytes / 2**20:.1f} MiB, resident={self.resident})"

    def backup_nbytes(self) -> int:
        return sum(t.nbytes for t in self.backups.values())

    def drop_weights(self) -> None:
        """Free every tensor of the module (it moves to the meta device, so other holders free theirs too)."""
        self.module.to("meta")
        self.backups.clear()
        self.applied = ()
        self.resident = False
        self.loaded = False

    def refill(self, fresh: "ManagedModule") -> None:
        """Take the module a reload built for this slot."""
        self.module, self.dtype, self.nbytes = fresh.module, fresh.dtype, fresh.nbytes
        self.loaded = True


def module_nbytes(module: torch.nn.Module) -> int:
    tensors = itertools.chain(module.parameters(), module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
