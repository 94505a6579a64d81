"""Node outputs kept between runs under their signature, bounded by entry count and by bytes (LRU).

Two kinds of entry:
- *latest*: the output a node id produced (or reused) most recently. Re-running a graph, or changing one input
  of it, reuses these, whatever the policy.
- *older*: outputs no node id points at any more (the previous seed's image, say). ``keep_older`` bounds how
  many are kept, least recently used first out; ``None`` keeps them within the hard bounds only.

Both kinds count towards the hard bounds (``max_entries``, ``max_bytes``). Entries hold references to the node's
output objects, never copies: a model handle cached here is the same object the model manager tracks.
"""
from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_ENTRIES = 4096
DEFAULT_MAX_BYTES = 8 * 1024**3


@dataclass
class CachedOutput:
    """One node's outputs: a list of values per output slot (the list semantics of the ecosystem), and its UI."""

    values: tuple[list[Any], ...]
    ui: dict[str, Any] | None
    nbytes: int = 0
    holders: set[str] = field(default_factory=set)  # node ids whose latest output this is


_SCALARS = frozenset({int, float, bool, type(None)})


def sizeof(obj: Any, _depth: int = 0) -> int:
    """Bytes held by a value, counting array payloads (tensors, numpy) and containers; models report their own."""
    kind = type(obj)
    if kind in _SCALARS:
        return 0
    if kind is tuple or kind is list:  # the usual outputs: a tuple of slot lists; scalars in them cost nothing
        return 0 if _depth > 4 else sum([sizeof(v, _depth + 1) for v in obj if type(v) not in _SCALARS])
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

    def __init__(
        self, max_entries: int = DEFAULT_MAX_ENTRIES, max_bytes: int = DEFAULT_MAX_BYTES, keep_older: int | None = None
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.keep_older = keep_older
        self._entries: OrderedDict[str, CachedOutput] = OrderedDict()
        self._older: OrderedDict[str, None] = OrderedDict()  # keys no node id holds, least recently used first
        self._latest: dict[str, str] = {}  # node id -> key of its latest output
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str, node_id: str | None = None) -> CachedOutput | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self._touch(key, node_id)
            self._trim_older()  # a hit adds nothing, so only the bound on older outputs can be crossed
        return entry

    def put(self, key: str, entry: CachedOutput, node_id: str | None = None) -> None:
        if self.max_entries <= 0:
            return
        entry.nbytes = sizeof(entry.values)
        if entry.nbytes > self.max_bytes:
            return
        replaced = self._entries.pop(key, None)
        if replaced is not None:
            self.total_bytes -= replaced.nbytes
            entry.holders = replaced.holders
        self._entries[key] = entry
        self.total_bytes += entry.nbytes
        self._touch(key, node_id)
        self._evict()

    def _touch(self, key: str, node_id: str | None) -> None:
        """Make `key` the latest output of `node_id` (or, without one, a recently used older entry)."""
        entry = self._entries[key]
        if node_id is None:
            if not entry.holders:
                self._older[key] = None
                self._older.move_to_end(key)
            return
        previous = self._latest.get(node_id)
        self._latest[node_id] = key
        entry.holders.add(node_id)
        self._older.pop(key, None)
        if previous is not None and previous != key and previous in self._entries:
            released = self._entries[previous]
            released.holders.discard(node_id)
            if not released.holders:
                self._older[previous] = None

    def _evict(self) -> None:
        while self._entries and (len(self._entries) > self.max_entries or self.total_bytes > self.max_bytes):
            self._remove(next(iter(self._entries)))
        self._trim_older()

    def _trim_older(self) -> None:
        while self.keep_older is not None and len(self._older) > self.keep_older:
            self._remove(next(iter(self._older)))

    def _remove(self, key: str) -> None:
        dropped = self._entries.pop(key)
        self._older.pop(key, None)
        self.total_bytes -= dropped.nbytes
        for node_id in dropped.holders:
            if self._latest.get(node_id) == key:
                del self._latest[node_id]
        dropped.holders.clear()

    def clear(self) -> None:
        self._entries.clear()
        self._older.clear()
        self._latest.clear()
        self.total_bytes = 0

    def stats(self) -> dict[str, int | None]:
        return {"entries": len(self._entries), "older": len(self._older), "bytes": self.total_bytes,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes, "keep_older": self.keep_older}
