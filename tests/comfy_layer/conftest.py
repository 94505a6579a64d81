"""Fixtures for the V3 (comfy_api.latest) tests: the toy packs of tests/comfy_layer/v3_packs/ in a custom_nodes dir."""
from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from sdgraph.cache import OutputCache
from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.paths import Dirs
from sdgraph.plugins import load_custom_nodes
from sdgraph.registry import Registry

V3_PACKS = Path(__file__).resolve().parent / "v3_packs"


def load_pack(base: Path, name: str, source: str) -> tuple[Registry, Dirs]:
    """A pack written by a test (`source` is its __init__.py) in base/custom_nodes/name, loaded without problems."""
    pack = base / "custom_nodes" / name
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text(textwrap.dedent(source))
    dirs = Dirs(base=base, extra_model_roots=[])
    registry = Registry()
    load_custom_nodes(registry, dirs.custom_nodes, dirs)
    assert not registry.problems, [p.message + p.traceback for p in registry.problems]
    return registry, dirs


class V3Run:
    """An executor over the toy V3 packs, with the loaded pack modules at hand."""

    def __init__(self, executor: Executor, dirs: Dirs) -> None:
        self.executor, self.dirs = executor, dirs

    @property
    def registry(self) -> Registry:
        return self.executor.registry

    def pack(self, name: str) -> ModuleType:
        return sys.modules[f"sdgraph_custom_nodes.{name}"]

    def run(self, prompt: dict) -> tuple:
        events: list = []
        result = self.executor.run(prompt, listener=lambda name, data: events.append((name, data)))
        return result, events


@pytest.fixture
def v3(tmp_path: Path) -> V3Run:
    for pack in ("v3_toy", "v3_dynamic"):
        shutil.copytree(V3_PACKS / pack, tmp_path / "custom_nodes" / pack)
    dirs = Dirs(base=tmp_path, extra_model_roots=[])
    registry = Registry()
    load_custom_nodes(registry, dirs.custom_nodes, dirs)
    assert not registry.problems, [p.message + p.traceback for p in registry.problems]
    return V3Run(Executor(registry, Services(dirs=dirs), OutputCache()), dirs)
