"""Pausing Python's cyclic garbage collector around bookkeeping that allocates many acyclic objects.

A full collection walks every tracked object while holding the GIL: with a 100,000-node prompt in memory one
takes a third of a second, during which no other thread (the server's event loop, say) runs. Parsing, preparing
and planning create millions of small, acyclic objects that only trigger such collections, so they run with the
collector paused. Pauses nest and may overlap across threads; the collector resumes when the last one ends (and
only if it was enabled when the first began), with what the pause allocated counted as old.
"""
from __future__ import annotations

import gc
import threading
from contextlib import contextmanager
from typing import Iterator

_lock = threading.Lock()
_holders = 0
_resume = False


def _acquire() -> None:
    global _holders, _resume
    with _lock:
        if _holders == 0:
            _resume = gc.isenabled()
            gc.disable()
        _holders += 1


def _release() -> None:
    global _holders
    with _lock:
        _holders -= 1
        if _holders == 0 and _resume:
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


@contextmanager
def collector_resumed() -> Iterator[None]:
    """Inside a pause: give this thread's hold back for a while (a node's own work runs with the collector)."""
    _release()
    try:
        yield
    finally:
        _acquire()
