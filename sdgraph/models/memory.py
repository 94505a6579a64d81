"""The CPU-RAM budget for loaded models: its default size, and which models leave first when it is exceeded."""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, TypeVar

from sdgraph.limits import machine_memory_bytes

RAM_FRACTION = 0.5  # of the memory available when the manager starts
T = TypeVar("T")


def available_ram_bytes(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Memory the system can give without swapping (MemAvailable), capped by the process's own limit."""
    limit = machine_memory_bytes()
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return min(limit, int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    return limit


def default_ram_budget() -> int:
    return int(available_ram_bytes() * RAM_FRACTION)


def victims(candidates: Iterable[tuple[T, int]], used: int, budget: int) -> list[T]:
    """From (model, bytes) pairs least recently used first, those to drop so that `used` fits `budget`."""
    chosen: list[T] = []
    for item, nbytes in candidates:
        if used <= budget:
            break
        if nbytes > 0:
            chosen.append(item)
            used -= nbytes
    return chosen


@lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def return_freed_memory() -> None:
    """Hand the pages of dropped weights back to the system. glibc keeps freed heap memory for reuse, so without
    this the process's resident size keeps growing as models of different sizes come and go."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
