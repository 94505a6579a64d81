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
    class Handle:
        def cache_nbytes(self) -> int:
            return 12  # what the value holds itself (model handles: not the manager's weights, tests/sd)

    assert sizeof({"samples": Blob(64), "extra": [Blob(36)]}) == 100
    assert sizeof({"model": Handle(), "latent": Blob(8)}) == 20


def test_no_cache_mode():
    cache = OutputCache(max_entries=0)
    cache.put("a", entry(1))
    assert len(cache) == 0


def test_latest_output_of_each_node_survives_when_older_ones_are_not_kept():
    cache = OutputCache(keep_older=0)
    cache.put("seed1", entry(1), node_id="3")
    cache.put("text", entry(2), node_id="6")
    cache.put("seed2", entry(3), node_id="3")  # node 3's earlier output is released and dropped
    assert "seed1" not in cache and "seed2" in cache and "text" in cache
    assert cache.stats()["older"] == 0


def test_older_outputs_are_kept_up_to_keep_older_least_recently_used_first():
    cache = OutputCache(keep_older=2)
    for seed in range(4):
        cache.put(f"seed{seed}", entry(seed), node_id="3")
    assert [k for k in ("seed0", "seed1", "seed2", "seed3") if k in cache] == ["seed1", "seed2", "seed3"]
    assert cache.get("seed1", node_id="3") is not None  # reused: latest again, seed3 becomes older
    cache.put("seed9", entry(9), node_id="3")
    assert "seed2" not in cache and {"seed1", "seed3", "seed9"} <= set(k for k in cache._entries)


def test_an_output_shared_by_two_nodes_stays_while_either_holds_it():
    cache = OutputCache(keep_older=0)
    cache.put("same", entry(1), node_id="a")
    assert cache.get("same", node_id="b") is not None
    cache.put("other", entry(2), node_id="a")
    assert "same" in cache  # node b still holds it
    cache.put("third", entry(3), node_id="b")
    assert "same" not in cache and len(cache) == 2


def test_hard_bounds_also_evict_latest_outputs():
    cache = OutputCache(max_entries=2, keep_older=0)
    for node in "abc":
        cache.put(node, entry(node), node_id=node)
    assert "a" not in cache and len(cache) == 2
    cache.put("a2", entry(0), node_id="a")  # node a's evicted entry left no stale pointer behind
    assert "a2" in cache and len(cache) == 2
