from __future__ import annotations

import pytest

from sdgraph.cache import OutputCache
from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.paths import Dirs
from sdgraph.plugins import load_module_pack
from sdgraph.registry import Registry
from tests.engine import toy_nodes


@pytest.fixture
def registry() -> Registry:
    reg = Registry()
    load_module_pack(reg, toy_nodes, "toy")
    assert not reg.problems, reg.problems
    return reg


@pytest.fixture
def executor(registry: Registry, tmp_path) -> Executor:
    toy_nodes.CALLS.clear()
    toy_nodes.OUTSIDE_STATE["version"] = 1
    toy_nodes.Slow.hook = None
    return Executor(registry, Services(dirs=Dirs(base=tmp_path)), OutputCache())


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def __call__(self, event: str, data: dict) -> None:
        self.events.append((event, data))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def of(self, name: str) -> list[dict]:
        return [data for event, data in self.events if event == name]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
