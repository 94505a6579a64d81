"""Pausing Python's cyclic garbage collector around bookkeeping that allocates many acyclic objects.

A full collection walks every tracked object while holding the GIL: with a 100,000-node prompt in memory one
takes a third of a second, during which no other thread (the server's event loop, say) runs. Parsing, preparing
and planning create millions of small, acyclic objects that only trigger such collections, so they run with the
collector paused. Pauses nest and may overlap across threads; the collector resumes when the last one ends (and
only if it was enabled when the first began), with what the pause allocated counted as old.

Freeing such a structure at once holds the GIL as long (up to half a second for a prepared 100,000-node prompt),
so `drain` empties a large mapping one entry at a time, giving other threads their turns in between.
"""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Any, Iterator, MutableMapping

_lock = threading.Lock()
_holders = 0  # holds of all threads
_resume = False
_local = threading.local()  # this thread's holds


def _acquire(count: int = 1) -> None:
    global _holders, _resume
    with _lock:
        if _holders == 0:
            _resume = gc.isenabled()
            gc.disable()
        _holders += count
    _local.holds = getattr(_local, "holds", 0) + count


def _release(count: int = 1, age: bool = True) -> None:
    global _holders
    _local.holds -= count
    with _lock:
        _holders -= count
        if _holders == 0 and _resume:
            if age:
                _age_young_objects()
            gc.enable()


def _age_young_objects() -> None:
    """Move what was allocated during the pause to the oldest generation, without a collection.

    Otherwise the first young-generation collection after the pause walks all of it at once (a quarter of a
    second after preparing a 100,000-node prompt). Freezing and unfreezing moves whole lists, in constant time.
    """
    gc.freeze()
    gc.unfreeze()


@contextmanager
def collector_paused() -> Iterator[None]:
    _acquire()
    try:
        yield
    finally:
        _release()


class collector_resumed:  # noqa: N801 - used like the context-manager functions beside it
    """Inside pauses: give back all of this thread's holds for a while, so a node's own work runs with the
    collector (unless another thread holds a pause meanwhile). A class, not a generator: it wraps every node call.

    Nothing is aged here: the executor freezes its own state while nodes run, and ageing would unfreeze it."""

    __slots__ = ("holds",)

    def __enter__(self) -> None:
        self.holds = getattr(_local, "holds", 0)
        if self.holds:
            _release(self.holds, age=False)

    def __exit__(self, *exc: Any) -> None:
        if self.holds:
            _acquire(self.holds)


def drain(*mappings: MutableMapping[Any, Any] | None) -> None:
    """Empty each mapping entry by entry (each entry freed on its own) instead of all at once."""
    for mapping in mappings:
        while mapping:
            mapping.popitem()
