"""The on-disk output cache: another process reuses what one computed; damaged entries are misses; bounded."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sdgraph.cache import OutputCache
from sdgraph.context import Services
from sdgraph.disk_cache import DiskCache, decode, encode
from sdgraph.execute import Executor
from sdgraph.paths import Dirs
from sdgraph.node import Input, NodeOutput
from sdgraph.registry import Registry
from tests.engine import toy_nodes

ROOT = Path(__file__).resolve().parents[2]

WORKFLOW = {"1": {"class_type": "Number", "inputs": {"value": 4}},
            "2": {"class_type": "Number", "inputs": {"value": 5}},
            "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
            "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}}}

# One process's run: a fresh executor over the toy nodes and the given cache directory; prints what was called.
PROCESS = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from sdgraph.context import Services
    from sdgraph.disk_cache import DiskCache
    from sdgraph.execute import Executor
    from sdgraph.paths import Dirs
    from sdgraph.plugins import load_module_pack
    from sdgraph.registry import Registry
    from tests.engine import toy_nodes
    registry = Registry()
    load_module_pack(registry, toy_nodes, "toy")
    disk = DiskCache(Path(sys.argv[1]), min_seconds=0.0)
    executor = Executor(registry, Services(dirs=Dirs(base=Path(sys.argv[1]))), disk_cache=disk)
    result = executor.run(json.loads(sys.argv[2]))
    print(json.dumps({"ok": result.ok, "outputs": result.outputs, "calls": dict(toy_nodes.CALLS),
                      "cached": result.cached}))
""")


def in_new_process(directory: Path, workflow: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", PROCESS, str(directory), json.dumps(workflow)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_second_process_reuses_the_first_ones_outputs(tmp_path: Path) -> None:
    first = in_new_process(tmp_path, WORKFLOW)
    assert first["ok"] and first["calls"] == {"Number": 2, "Add": 1, "Show": 1}
    second = in_new_process(tmp_path, WORKFLOW)
    assert second["outputs"] == first["outputs"] == {"4": {"text": ["9"]}}
    assert second["calls"] == {"Show": 1}  # an output node runs again (its effects are the point); the rest is read
    assert set(second["cached"]) == {"1", "2", "3"}


def test_a_damaged_entry_is_a_miss_and_is_recomputed(tmp_path: Path) -> None:
    in_new_process(tmp_path, WORKFLOW)
    entries = sorted((tmp_path).glob("??/*.out"))
    assert len(entries) == 3
    for entry in entries:
        data = entry.read_bytes()
        if b'"values":[[4]]' in data:  # altered in place: still valid, same length, a wrong value but for the digest
            entry.write_bytes(data.replace(b'"values":[[4]]', b'"values":[[7]]'))
        elif b'"values":[[9]]' in data:
            entry.write_bytes(data[:-1])  # truncated
        else:
            entry.write_bytes(b"")
    again = in_new_process(tmp_path, WORKFLOW)
    assert again["ok"] and again["outputs"] == {"4": {"text": ["9"]}}
    assert again["calls"] == {"Number": 2, "Add": 1, "Show": 1}
    assert len(list(tmp_path.glob("??/*.out"))) == 3  # rewritten, whole


def test_entries_are_bounded_by_bytes_least_recently_used_first(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path, max_bytes=10_000)
    size = len(encode((["x" * 1000],), None))
    capacity = 10_000 // size
    for index in range(capacity + 3):
        assert disk.put(f"{index:064x}", (["x" * 1000],), None)
        if index == capacity - 2:
            assert disk.get(f"{0:064x}") is not None  # used again: kept while newer ones go
    assert disk.total_bytes <= 10_000 and len(disk) == capacity
    assert f"{0:064x}" in disk and f"{1:064x}" not in disk
    reopened = DiskCache(tmp_path, max_bytes=10_000)
    assert len(reopened) == len(disk) and reopened.total_bytes == disk.total_bytes


def test_values_that_cannot_be_written_faithfully_stay_in_memory(tmp_path: Path) -> None:
    disk = DiskCache(tmp_path)
    assert not disk.put("a" * 64, ([object()],), None)
    assert not disk.put("b" * 64, ([{1: "int key"}],), None)
    values = ([1, 2.5, float("inf")], [("a", None, True)], [{"text": ["x"], "n": [3]}])
    assert decode(encode(values, {"images": [{"filename": "a.png"}]})) == (
        values, {"images": [{"filename": "a.png"}]})


@pytest.fixture
def toy_registry() -> Registry:
    from sdgraph.plugins import load_module_pack
    registry = Registry()
    load_module_pack(registry, toy_nodes, "toy")
    return registry


def test_not_idempotent_and_cheap_outputs_are_not_written(toy_registry: Registry, tmp_path: Path) -> None:
    disk = DiskCache(tmp_path / "disk", min_seconds=0.0)
    executor = Executor(toy_registry, Services(dirs=Dirs(base=tmp_path)), OutputCache(), disk)
    workflow = {"1": {"class_type": "Random", "inputs": {}}, "2": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    assert executor.run(workflow).ok and len(disk) == 0  # a fresh key each run: writing it would only fill the disk
    slow_bar = DiskCache(tmp_path / "slow", min_seconds=60.0)
    Executor(toy_registry, Services(dirs=Dirs(base=tmp_path)), OutputCache(), slow_bar).run(WORKFLOW)
    assert len(slow_bar) == 0


def test_a_changed_node_pack_does_not_reuse_old_entries(toy_registry: Registry, tmp_path: Path) -> None:
    from sdgraph import disk_cache
    disk = DiskCache(tmp_path / "disk", min_seconds=0.0)
    services = Services(dirs=Dirs(base=tmp_path))
    Executor(toy_registry, services, OutputCache(), disk).run(WORKFLOW)
    toy_nodes.CALLS.clear()
    disk_cache._stamps.clear()
    original = disk_cache._stamp
    disk_cache._stamp = lambda base: original(base) + "-edited"
    try:
        Executor(toy_registry, services, OutputCache(), disk).run(WORKFLOW)
    finally:
        disk_cache._stamp = original
        disk_cache._stamps.clear()
    assert toy_nodes.CALLS["Add"] == 1


def test_a_model_file_replaced_under_its_name_is_not_taken_for_the_old_one(tmp_path: Path) -> None:
    from sdgraph.node import Combo, Node, Output, models_in
    from sdgraph.types import STRING

    reads: list[str] = []

    class ReadModel(Node):
        inputs = [Combo("name", models_in("checkpoints"))]
        outputs = [Output(STRING)]

        def run(self, name: str) -> tuple:
            text = self.ctx.dirs.find_model("checkpoints", name).read_text()
            reads.append(text)
            return (text,)

    class ShowText(Node):
        output_node = True
        inputs = [Input("text", STRING)]

        def run(self, text: str) -> NodeOutput:
            return NodeOutput((), {"text": [text]})

    registry = Registry()
    registry.add_native([ReadModel, ShowText], "files")
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "m.safetensors").write_text("first")
    executor = Executor(registry, Services(dirs=Dirs(base=tmp_path, extra_model_roots=[])))
    workflow = {"1": {"class_type": "ReadModel", "inputs": {"name": "m.safetensors"}},
                "2": {"class_type": "ShowText", "inputs": {"text": ["1", 0]}}}
    assert executor.run(workflow).outputs["2"] == {"text": ["first"]}
    assert executor.run(workflow).ok and reads == ["first"]  # unchanged: cached
    (folder / "m.safetensors").write_text("second, longer")
    assert executor.run(workflow).outputs["2"] == {"text": ["second, longer"]}
