"""Write interface facts of ComfyUI that the compatibility layer needs (sdgraph/comfy_layer/data/):

- core_functions.json: for each V1 core node class, the name of its FUNCTION, and which of them ComfyUI's
  top-level `nodes` module defines (packs call `nodes.VAEDecode().decode(...)`);
- cli_defaults.json: each command-line option's attribute name and its default (what `comfy.cli_args.args`
  holds in a ComfyUI started without flags), where the default is a literal.

Reads ComfyUI's sources with `ast` (nothing is imported or copied: only names and literal defaults are kept).
    python -m tools.comfy_reference.comfy_interface /tmp/comfyui
"""
from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "sdgraph" / "comfy_layer" / "data"
OUT = DATA / "core_functions.json"


def _functions(tree: ast.Module) -> dict[str, str]:
    """{class name: FUNCTION}, a FUNCTION inherited from a base class of the same module included
    (PreviewImage takes SaveImage's)."""
    found: dict[str, str] = {}
    bases: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases[node.name] = [b.id for b in node.bases if isinstance(b, ast.Name)]
            for item in node.body:
                if isinstance(item, ast.Assign) and any(getattr(t, "id", "") == "FUNCTION" for t in item.targets) \
                        and isinstance(item.value, ast.Constant) and isinstance(item.value.value, str):
                    found[node.name] = item.value.value
    changed = True
    while changed:
        changed = False
        for name, parents in bases.items():
            inherited = next((found[p] for p in parents if p in found), None)
            if name not in found and inherited is not None:
                found[name] = inherited
                changed = True
    return found


def _mapping(tree: ast.Module) -> dict[str, str]:
    """NODE_CLASS_MAPPINGS = {"Name": ClassName, ...} at module level."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "NODE_CLASS_MAPPINGS" for t in node.targets) \
                and isinstance(node.value, ast.Dict):
            return {k.value: v.id for k, v in zip(node.value.keys, node.value.values)
                    if isinstance(k, ast.Constant) and isinstance(v, ast.Name)}
    return {}


def _cli_defaults(tree: ast.Module) -> dict[str, object]:
    found: dict[str, object] = {}
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "add_argument"):
            continue
        flags = [a.value for a in call.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
        if not flags:
            continue
        kw = {k.arg: k.value for k in call.keywords}
        dest = kw["dest"].value if isinstance(kw.get("dest"), ast.Constant) else flags[0][2:].replace("-", "_")
        action = kw["action"].value if isinstance(kw.get("action"), ast.Constant) else None
        if "default" in kw:
            try:
                found[dest] = ast.literal_eval(kw["default"])
            except ValueError:  # an expression (an enum member): the layer supplies it
                continue
        else:
            found[dest] = {"store_true": False, "store_false": True}.get(action)
    return dict(sorted(found.items()))


def main(root: Path) -> None:
    defaults = _cli_defaults(ast.parse((root / "comfy" / "cli_args.py").read_text(encoding="utf-8")))
    (DATA / "cli_defaults.json").write_text(json.dumps(defaults, indent=1) + "\n")
    print(f"{len(defaults)} cli defaults")
    functions: dict[str, str] = {}
    in_nodes: list[str] = []
    for path in [root / "nodes.py", *sorted((root / "comfy_extras").glob("nodes_*.py"))]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        by_class = _functions(tree)
        for name, cls in _mapping(tree).items():
            if cls in by_class:
                functions[name] = by_class[cls]
                if path.name == "nodes.py":
                    in_nodes.append(name)
    OUT.write_text(json.dumps({"functions": dict(sorted(functions.items())), "nodes_module": sorted(in_nodes)},
                              indent=1) + "\n")
    print(f"{len(functions)} functions, {len(in_nodes)} in nodes.py -> {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/comfyui"))
