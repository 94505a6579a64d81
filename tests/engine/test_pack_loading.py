"""custom_nodes/ packs load as ComfyUI loads them: relative imports of any depth, __init__ runs, mappings read,
failures and missing requirements reported with the module named, plugin prints kept off stdout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sdgraph.plugins import load_custom_nodes
from sdgraph.registry import Registry

ROOT = Path(__file__).resolve().parents[2]

ECHO_NODE = textwrap.dedent("""
    class {name}:
        @classmethod
        def INPUT_TYPES(cls):
            return {{"required": {{"text": ("STRING", {{"default": "{text}"}})}}}}
        RETURN_TYPES = ("STRING",)
        FUNCTION = "go"
        CATEGORY = "test"
        def go(self, text):
            return (text + "{suffix}",)
""")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def nested_pack(root: Path, suffix: str = "!") -> None:
    """A pack whose __init__ imports from a sub-sub-module that itself uses a relative import upwards."""
    write(root / "deep_pack" / "__init__.py", """
        from .py.nodes.echo import Echo
        from . import py
        INIT_RAN = True
        NODE_CLASS_MAPPINGS = {"DeepEcho": Echo}
        NODE_DISPLAY_NAME_MAPPINGS = {"DeepEcho": "Deep echo (test)"}
    """)
    write(root / "deep_pack" / "py" / "__init__.py", "")
    write(root / "deep_pack" / "py" / "nodes" / "__init__.py", "")
    write(root / "deep_pack" / "py" / "nodes" / "echo.py", "from ..util import SUFFIX\n" + textwrap.dedent(
        ECHO_NODE.format(name="Echo", text="hi", suffix="{SUFFIX}").replace('"{SUFFIX}"', "SUFFIX")))
    write(root / "deep_pack" / "py" / "util.py", f"SUFFIX = {suffix!r}\n")


def test_nested_relative_imports_init_and_display_names(tmp_path):
    nested_pack(tmp_path / "custom_nodes")
    registry = Registry()
    load_custom_nodes(registry, tmp_path / "custom_nodes")
    assert not registry.problems, [p.message for p in registry.problems]
    node = registry.get("DeepEcho")
    assert node is not None and node.pack == "custom_nodes/deep_pack"
    assert node.spec.display_name == "Deep echo (test)"
    assert node.spec.describe()["python_module"] == "custom_nodes.deep_pack"  # ComfyUI's form, V1 and V3 alike
    assert node.invoke({"text": "a"}, None) == ("a!",)
    pack = sys.modules["sdgraph_custom_nodes.deep_pack"]
    assert pack.INIT_RAN and sys.modules["sdgraph_custom_nodes"].deep_pack is pack


def test_a_second_directory_with_a_pack_of_the_same_name_gets_its_own_modules(tmp_path):
    nested_pack(tmp_path / "a", suffix="!")
    nested_pack(tmp_path / "b", suffix="?")
    first, second = Registry(), Registry()
    load_custom_nodes(first, tmp_path / "a")
    load_custom_nodes(second, tmp_path / "b")
    assert second.get("DeepEcho").invoke({"text": "x"}, None) == ("x?",)  # not the first load's util module


def test_a_pack_missing_a_module_is_reported_with_its_name(tmp_path):
    write(tmp_path / "needs_lib" / "__init__.py", "from .impl import NODE_CLASS_MAPPINGS\n")
    write(tmp_path / "needs_lib" / "impl.py", "import not_installed_lib_xyz\nNODE_CLASS_MAPPINGS = {}\n")
    write(tmp_path / "fine.py", ECHO_NODE.format(name="Fine", text="ok", suffix="") + "\nNODE_CLASS_MAPPINGS = {'Fine': Fine}\n")
    registry = Registry()
    load_custom_nodes(registry, tmp_path)
    (problem,) = registry.problems
    assert problem.pack == "custom_nodes/needs_lib"
    assert problem.missing_module == "not_installed_lib_xyz"
    assert "not_installed_lib_xyz" in problem.message and "impl.py" in problem.traceback
    assert problem.as_dict()["missing_module"] == "not_installed_lib_xyz"
    assert "Fine" in registry  # the other pack still loads
    assert not any(k.startswith("sdgraph_custom_nodes.needs_lib") for k in sys.modules)


def test_requirements_txt_is_reported_never_installed(tmp_path):
    write(tmp_path / "reqs" / "__init__.py", ECHO_NODE.format(name="R", text="", suffix="")
          + "\nNODE_CLASS_MAPPINGS = {'ReqEcho': R}\n")
    write(tmp_path / "reqs" / "requirements.txt", """
        # a comment
        pydantic>=2
        networkx<1.0
        surely-not-a-real-distribution-xyz>=1.0
        windows-only-thing; sys_platform == "win32"
        git+https://example.invalid/repo.git
        -r other.txt
    """)
    registry = Registry()
    load_custom_nodes(registry, tmp_path)
    assert "ReqEcho" in registry  # a missing requirement alone does not stop the pack
    found = {p.missing_module: p.message for p in registry.problems}
    assert set(found) == {"networkx", "surely-not-a-real-distribution-xyz"}
    assert "is not installed" in found["surely-not-a-real-distribution-xyz"]
    assert "is not met" in found["networkx"] and "never installs" in found["networkx"]


def test_plugin_prints_never_corrupt_nodes_json(tmp_path):
    custom = tmp_path / "custom_nodes"
    write(custom / "chatty" / "__init__.py", textwrap.dedent("""
        import os, threading, time
        print("### chatty pack loading ###")
        os.write(1, b"raw bytes on fd 1\\n")
        # a thread the pack leaves running prints once loading is over (Impact Pack loads its wildcards so);
        # the interpreter waits for it at exit, after the document was printed
        threading.Thread(target=lambda: (time.sleep(0.5), print("late thread line"))).start()
    """) + ECHO_NODE.format(name="Chatty", text="", suffix="") + "\nNODE_CLASS_MAPPINGS = {'Chatty': Chatty}\n")
    write(custom / "broken.py", "print('about to fail')\nimport not_here_either_xyz\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "sdgraph", "nodes", "--json", "--base-dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)  # stdout is exactly one JSON document
    assert "Chatty" in out["nodes"]
    assert [p["missing_module"] for p in out["problems"]] == ["not_here_either_xyz"]
    assert "### chatty pack loading ###" in done.stderr and "raw bytes on fd 1" in done.stderr
    assert "about to fail" in done.stderr
    assert "late thread line" in done.stderr
