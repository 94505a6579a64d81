"""Node packs: entry points, custom_nodes, broken packs, conflicts."""
from __future__ import annotations

import importlib.metadata
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from sdgraph.execute import Executor
from sdgraph.plugins import load_custom_nodes, load_entry_points, load_module_pack
from sdgraph.registry import Registry
from tests.engine import toy_nodes

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sdgraph-example-plugin"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_custom_nodes_file_and_package(tmp_path):
    write(tmp_path / "single.py", """
        class Hello:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {"name": ("STRING", {"default": "world"})}}
            RETURN_TYPES = ("STRING",)
            FUNCTION = "go"
            def go(self, name):
                return ("hello " + name,)
        NODE_CLASS_MAPPINGS = {"Hello": Hello}
    """)
    write(tmp_path / "pkg" / "__init__.py", "from .impl import NODE_CLASS_MAPPINGS\n")
    write(tmp_path / "pkg" / "impl.py", """
        class Bye:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {}}
            RETURN_TYPES = ("STRING",)
            FUNCTION = "go"
            def go(self):
                return ("bye",)
        NODE_CLASS_MAPPINGS = {"Bye": Bye}
    """)
    registry = Registry()
    load_custom_nodes(registry, tmp_path)
    assert not registry.problems
    assert "Hello" in registry and "Bye" in registry
    assert registry.get("Hello").pack == "custom_nodes/single"


def test_broken_packs_are_reported_and_skipped(tmp_path):
    write(tmp_path / "raises.py", "raise RuntimeError('cannot start')\n")
    write(tmp_path / "exits.py", "import sys\nsys.exit(3)\n")
    write(tmp_path / "bad_decl.py", """
        class NoFunction:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {}}
            RETURN_TYPES = ()
            FUNCTION = "missing"
        class Fine:
            @classmethod
            def INPUT_TYPES(cls):
                return {"required": {}}
            RETURN_TYPES = ("INT",)
            FUNCTION = "go"
            def go(self):
                return (1,)
        NODE_CLASS_MAPPINGS = {"NoFunction": NoFunction, "Fine": Fine, "NotAClass": 42}
    """)
    registry = Registry()
    load_custom_nodes(registry, tmp_path)
    by_pack = {(p.pack, p.node): p for p in registry.problems}
    assert "RuntimeError: cannot start" in by_pack[("custom_nodes/raises", None)].message
    assert "Traceback" in by_pack[("custom_nodes/raises", None)].traceback
    assert "SystemExit" in by_pack[("custom_nodes/exits", None)].message
    assert "FUNCTION" in by_pack[("custom_nodes/bad_decl", "NoFunction")].message
    assert ("custom_nodes/bad_decl", "NotAClass") in by_pack
    assert "Fine" in registry and "NoFunction" not in registry


def test_native_declaration_checked_against_run(tmp_path):
    write(tmp_path / "mismatch.py", """
        from sdgraph.node import Node, Int, Output
        class Wrong(Node):
            inputs = [Int("a")]
            outputs = [Output("INT")]
            def run(self, b):
                return (b,)
        NODES = [Wrong]
    """)
    registry = Registry()
    load_custom_nodes(registry, tmp_path)
    assert "Wrong" not in registry
    assert "run() has no such parameter" in registry.problems[0].message


def test_a_pack_cannot_replace_a_builtin_node(tmp_path):
    registry = Registry()
    load_module_pack(registry, toy_nodes, "builtin")
    write(tmp_path / "thief.py", """
        from sdgraph.node import Node, Int, Output
        class Number(Node):
            inputs = [Int("value")]
            outputs = [Output("INT")]
            def run(self, value):
                return (-1,)
        NODES = [Number]
    """)
    load_custom_nodes(registry, tmp_path)
    assert registry.get("Number").pack == "builtin"
    assert any("conflicts" in p.message and p.node == "Number" for p in registry.problems)


@pytest.fixture
def installed_example(tmp_path, monkeypatch):
    """Install the example plugin the way pip would: its package plus dist-info with entry_points.txt."""
    site = tmp_path / "site"
    shutil.copytree(EXAMPLE / "sdgraph_example_plugin", site / "sdgraph_example_plugin")
    dist = site / "sdgraph_example_plugin-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sdgraph-example-plugin\nVersion: 0.1.0\n")
    pyproject = (EXAMPLE / "pyproject.toml").read_text()
    line = next(l for l in pyproject.splitlines() if l.startswith("text-utils"))
    (dist / "entry_points.txt").write_text(f"[sdgraph.nodes]\n{line.replace(chr(34), '')}\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("sdgraph_example_plugin", None)


def test_example_plugin_loads_through_its_entry_point(installed_example):
    registry = Registry()
    load_entry_points(registry, builtin=False)
    assert registry.get("TextJoin").pack == "sdgraph-example-plugin:text-utils"
    assert registry.get("TextRepeat").spec.display_name == "Repeat Text"
    load_module_pack(registry, toy_nodes, "toy")
    workflow = {
        "1": {"class_type": "TextJoin", "inputs": {"first": "a", "second": "b", "separator": "-"}},
        "2": {"class_type": "TextRepeat", "inputs": {"text": ["1", 0], "times": 3}},
        "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}},
    }
    assert Executor(registry).run(workflow).outputs["3"] == {"text": ["a-ba-ba-b"]}
