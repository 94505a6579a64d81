"""The file cache: what each model file (or diffusers folder) was loaded into, keyed by its identity on disk.

An entry is current while the file keeps the identity it had when it was read (resolved path, size and mtime
of every file); a changed file gets a new entry, and the old one is *retired*: its object stays usable while
its weights are in memory, but is never filled from disk again (the file no longer holds those weights).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from sdgraph.models.slots import ManagedModule

CacheKey = tuple[Any, ...]


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


def path_bytes(path: Path) -> int:
    """Bytes on disk of a file or folder: what loading it will roughly add to memory."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def loose_tensor_bytes(obj: Any, depth: int = 0) -> int:
    """Bytes of tensors a loaded object holds in plain containers (a LoRA's factors), not through slots."""
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int) and hasattr(obj, "element_size"):
        return nbytes
    if depth > 4:
        return 0
    if isinstance(obj, dict):
        return sum(loose_tensor_bytes(v, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(loose_tensor_bytes(v, depth + 1) for v in obj)
    return 0


@dataclass(eq=False)
class FileEntry:
    """One file read by one loader: the object it built and the slots of its modules."""

    kind: str
    path: Path
    options: tuple[Any, ...]
    identity: tuple[Any, ...]
    loader: Callable[[Path], Any]
    obj: Any = None
    slots: list["ManagedModule"] = field(default_factory=list)
    loose_bytes: int = 0
    last_used: int = 0
    retired: bool = False

    @property
    def key(self) -> CacheKey:
        return (self.kind, str(self.path.resolve()), self.options)

    @property
    def loaded(self) -> bool:
        return all(slot.loaded for slot in self.slots)

    def describe(self) -> str:
        return f"{self.kind} {self.path}"


class FileCache:
    """Current entries by key, and every entry (current or retired) whose weights may still be in memory."""

    def __init__(self) -> None:
        self._current: dict[CacheKey, FileEntry] = {}
        self.entries: list[FileEntry] = []

    def current(self, key: CacheKey) -> FileEntry | None:
        return self._current.get(key)

    def add(self, entry: FileEntry) -> None:
        old = self._current.get(entry.key)
        if old is not None:
            old.retired = True
        self._current[entry.key] = entry
        self.entries.append(entry)

    def restore(self, entry: FileEntry) -> None:
        """Track a forgotten entry again (a handle still held elsewhere is filling it from disk)."""
        if entry not in self.entries:
            self.entries.append(entry)
        if not entry.retired:
            self._current.setdefault(entry.key, entry)

    def prune_dropped(self, keep: int) -> None:
        """Forget all but the `keep` most recently used dropped entries (their module skeletons stay only with
        whoever still holds a handle, which can fill them again)."""
        dropped = sorted((e for e in self.entries if e.slots and not e.loaded), key=lambda e: e.last_used)
        for entry in dropped[: max(0, len(dropped) - keep)]:
            self.remove(entry)

    def remove(self, entry: FileEntry) -> None:
        """Forget an entry: a later load reads its file again."""
        if self._current.get(entry.key) is entry:
            del self._current[entry.key]
        if entry in self.entries:
            self.entries.remove(entry)

    def clear(self) -> None:
        self._current.clear()
        self.entries.clear()
