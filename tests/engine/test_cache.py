"""The output cache: LRU by entries and by bytes, holding references, not copies."""
from __future__ import annotations

from sdgraph.cache import CachedOutput, OutputCache, sizeof


class Blob:
    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes


def entry(*values) -> CachedOutput:
    return CachedOutput(tuple([v] for v in values), None)


def test_lru_by_entries_keeps_recently_used():
    cache = OutputCache(max_entries=2)
    cache.put("a", entry(1))
    cache.put("b", entry(2))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", entry(3))
    assert "a" in cache and "c" in cache and "b" not in cache


def test_lru_by_bytes():
    cache = OutputCache(max_entries=100, max_bytes=1000)
    cache.put("a", entry(Blob(400)))
    cache.put("b", entry(Blob(400)))
    cache.put("c", entry(Blob(400)))
    assert "a" not in cache and len(cache) == 2 and cache.total_bytes == 800
    cache.put("huge", entry(Blob(5000)))  # larger than the whole budget: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 2


def test_holds_references_not_copies():
    cache = OutputCache()
    blob = Blob(10)
    cache.put("k", entry(blob))
    assert cache.get("k").values[0][0] is blob


def test_sizeof_counts_payloads_in_containers():
    class Model:
        def cache_nbytes(self) -> int:
            return 0  # models belong to the model manager, not to the cache budget

    assert sizeof({"samples": Blob(64), "extra": [Blob(36)]}) == 100
    assert sizeof(Model()) == 0


def test_no_cache_mode():
    cache = OutputCache(max_entries=0)
    cache.put("a", entry(1))
    assert len(cache) == 0
