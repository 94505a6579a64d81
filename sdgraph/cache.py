"""Node outputs kept between runs under their signature, bounded by entry count and by bytes (LRU).

Entries hold references to the node's output objects, never copies: a model handle cached here is the
same object the model manager tracks.
"""
from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_ENTRIES = 4096
DEFAULT_MAX_BYTES = 8 * 1024**3


@dataclass
class CachedOutput:
    """One node's outputs: a list of values per output slot (the list semantics of the ecosystem), and its UI."""

    values: tuple[list[Any], ...]
    ui: dict[str, Any] | None
    nbytes: int = 0


_SCALARS = frozenset({int, float, bool, type(None)})


def sizeof(obj: Any, _depth: int = 0) -> int:
    """Bytes held by a value, counting array payloads (tensors, numpy) and containers; models report their own."""
    if type(obj) in _SCALARS:
        return 0
    own = getattr(obj, "cache_nbytes", None)
    if callable(own):
        return int(own())
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if _depth > 4:
        return 0
    if isinstance(obj, dict):
        return sum(sizeof(v, _depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(sizeof(v, _depth + 1) for v in obj)
    if isinstance(obj, (str, bytes)):
        return sys.getsizeof(obj)
    return 0


class OutputCache:
    """LRU of node outputs; `max_entries=0` turns caching off (each run still shares outputs internally)."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, CachedOutput] = OrderedDict()
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> CachedOutput | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CachedOutput) -> None:
        if self.max_entries <= 0:
            return
        entry.nbytes = sizeof(entry.values)
        if entry.nbytes > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.total_bytes -= old.nbytes
        self._entries[key] = entry
        self.total_bytes += entry.nbytes
        self._evict()

    def _evict(self) -> None:
        while self._entries and (len(self._entries) > self.max_entries or self.total_bytes > self.max_bytes):
            _, dropped = self._entries.popitem(last=False)
            self.total_bytes -= dropped.nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.total_bytes = 0

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self.total_bytes,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes}
