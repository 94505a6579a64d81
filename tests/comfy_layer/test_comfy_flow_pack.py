"""A ComfyUI pack building subgraphs with comfy_execution's GraphBuilder and blocking with its ExecutionBlocker."""
from __future__ import annotations

import textwrap
from pathlib import Path

from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.paths import Dirs
from sdgraph.plugins import load_custom_nodes
from sdgraph.registry import Registry

PACK = '''
from comfy_execution.graph_utils import GraphBuilder, ExecutionBlocker, is_link


class PackNumber:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    def go(self, value):
        return (value,)


class PackAdd:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0}), "b": ("INT", {"default": 0})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    def go(self, a, b):
        return (a + b,)


class PackTimes:
    """value * count, as a chain of PackAdd nodes built with GraphBuilder."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}), "count": ("INT", {"default": 3})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    def go(self, value, count):
        graph = GraphBuilder()
        total = graph.node("PackNumber", value=0)
        for _ in range(count):
            total = graph.node("PackAdd", a=total.out(0), b=value)
        assert is_link(total.out(0))
        return {"result": (total.out(0),), "expand": graph.finalize()}


class PackGate:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}), "open": ("BOOLEAN", {"default": True})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"

    def go(self, value, open):
        return (value if open else ExecutionBlocker(None),)


class PackShow:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "go"

    def go(self, value):
        return {"ui": {"value": [value]}}


NODE_CLASS_MAPPINGS = {c.__name__: c for c in (PackNumber, PackAdd, PackTimes, PackGate, PackShow)}
'''


def test_graph_builder_and_blocker_from_a_pack_run_in_sdgraph(tmp_path: Path) -> None:
    pack = tmp_path / "custom_nodes" / "flow_pack"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text(textwrap.dedent(PACK))
    dirs = Dirs(base=tmp_path)
    registry = Registry()
    load_custom_nodes(registry, dirs.custom_nodes, dirs)
    assert not registry.problems, [p.message for p in registry.problems]
    executor = Executor(registry, Services(dirs=dirs))
    workflow = {"1": {"class_type": "PackNumber", "inputs": {"value": 7}},
                "2": {"class_type": "PackTimes", "inputs": {"value": ["1", 0], "count": 4}},
                "3": {"class_type": "PackShow", "inputs": {"value": ["2", 0]}},
                "4": {"class_type": "PackGate", "inputs": {"value": ["1", 0], "open": False}},
                "5": {"class_type": "PackShow", "inputs": {"value": ["4", 0]}}}
    result = executor.run(workflow)
    assert result.ok, result.error
    assert result.outputs["3"] == {"value": [28]} and "5" not in result.outputs
    assert {n for n in result.executed if n.startswith("2.")} == {f"2.0.0.{i}" for i in range(1, 6)}
