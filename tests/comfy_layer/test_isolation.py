"""ComfyUI's names appear only once plugins load, and never change what sdgraph's own imports resolve to."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMES = {"folder_paths", "comfy", "nodes", "node_helpers", "latent_preview", "server", "execution",
         "comfy_execution", "comfy_api"}


def python(code: str, cwd: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_no_plugins_no_comfy_names(tmp_path):
    out = python("""
import json, sys
from sdgraph.plugins import build_registry
from sdgraph.comfy_layer import active
build_registry(plugins=False)
print(json.dumps({"path": active(), "loaded": sorted(m for m in sys.modules
      if m.split('.')[0] in ('folder_paths', 'comfy', 'nodes', 'node_helpers', 'latent_preview'))}))
""", tmp_path)
    assert out == {"path": False, "loaded": []}


def test_checkout_nodes_package_is_set_aside_for_plugins_and_builtins_still_import(tmp_path):
    """From the repository root the checkout's `nodes/` (the built-in packs) is importable as `nodes`; a pack
    must still get ComfyUI's `nodes` (the checkout root, "" here, stays first on sys.path), and sdgraph keeps
    importing its packs as sdgraph.nodes.*."""
    out = python("""
import json, sys
import nodes as checkout_nodes
from sdgraph.comfy_layer import activate, SHADOWED
activate(None)
import nodes
import sdgraph.nodes.sd.latent as latent
print(json.dumps({"before": checkout_nodes.__file__, "after": nodes.__file__, "max": nodes.MAX_RESOLUTION,
                  "shadowed": SHADOWED.get("nodes"), "builtin": latent.__file__}))
""", ROOT)
    assert out["before"] == str(ROOT / "nodes" / "__init__.py")
    assert out["after"].endswith("comfy_layer/toplevel/nodes.py") and out["max"] == 16384
    assert out["shadowed"] == out["before"]
    assert out["builtin"] == str(ROOT / "nodes" / "sd" / "latent.py")


def test_sdgraph_never_imports_comfyui_names():
    """Outside the layer itself, no module of sdgraph or its built-in nodes imports one of these names."""
    layer = ROOT / "sdgraph" / "comfy_layer"
    for path in [*(ROOT / "sdgraph").rglob("*.py"), *(ROOT / "nodes").rglob("*.py")]:
        if layer in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = {node.module.split(".")[0]}
            else:
                continue
            assert not tops & NAMES, f"{path.relative_to(ROOT)} imports {tops & NAMES}"
