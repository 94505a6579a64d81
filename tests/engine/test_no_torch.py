"""The engine core must import, and run a workflow, without torch."""
from __future__ import annotations

import subprocess
import sys

CORE = ["types", "spec", "node", "comfy_compat", "registry", "workflow", "validate", "signature", "cache",
        "execute", "context", "paths", "plugins", "overrides"]


def test_core_modules_do_not_import_torch():
    code = (
        "import sys\n"
        f"for m in {CORE!r}: __import__('sdgraph.' + m)\n"
        "from sdgraph.registry import Registry; from sdgraph.plugins import load_module_pack\n"
        "from sdgraph.execute import Executor; from tests.engine import toy_nodes\n"
        "r = Registry(); load_module_pack(r, toy_nodes, 't')\n"
        "res = Executor(r).run({'1': {'class_type': 'Number', 'inputs': {'value': 1}},"
        " '2': {'class_type': 'Show', 'inputs': {'value': ['1', 0]}}})\n"
        "assert res.ok\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
