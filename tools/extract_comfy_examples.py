"""Extract the (workflow, prompt) pairs that ComfyUI's example pictures carry, for the UI-format parity test.

    python tools/extract_comfy_examples.py GIT_DIR [--out tests/uiformat/data/comfy_examples.jsonl.gz]

GIT_DIR is a git directory (no work tree needed) of github.com/comfyanonymous/ComfyUI_examples. Every PNG and
WebP picture at HEAD is read with sdgraph.uiformat.pictures.read_picture_chunks, and for each one that carries
both texts one JSON line is written: {"name": <path in the repository>, "workflow": <the JSON text as found>,
"prompt": <the JSON text as found>, "core": <whether every node is a ComfyUI core node>, "non_core": [...]}.
The first line is a header: the source, its commit, and the pictures that carried no pair or were absent from
the snapshot. No picture is copied: only the two texts each one carries.

"Core" means: every class_type of the prompt is a ComfyUI core node (the names in
tests/uiformat/data/comfyui_core_node_names.txt, the keys of ComfyUI's /object_info on a bare install), and every
node of the workflow (inside subgraph definitions and old group nodes too) is one, or one of the frontend's own
nodes (Reroute, PrimitiveNode, Note, MarkdownNote), or an instance of a subgraph or group node it defines.
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sdgraph.uiformat.pictures import read_picture_chunks  # noqa: E402

DATA = ROOT / "tests" / "uiformat" / "data"
CORE_NAMES = DATA / "comfyui_core_node_names.txt"
FRONTEND_NODES = {"Reroute", "PrimitiveNode", "Note", "MarkdownNote"}
PICTURES = (".png", ".webp")


def git(git_dir: Path, *args: str) -> bytes:
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, check=True).stdout


def core_names(path: Path = CORE_NAMES) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def workflow_types(workflow: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(node types used anywhere in the workflow, names of the subgraphs and group nodes it defines)."""
    used: set[str] = set()
    defined: set[str] = set()

    def walk(graph: dict[str, Any]) -> None:
        for node in graph.get("nodes") or []:
            if isinstance(node, dict) and isinstance(node.get("type"), str):
                used.add(node["type"])
        definitions = graph.get("definitions") or {}
        for sub in definitions.get("subgraphs") or []:
            defined.add(sub.get("id"))
            walk(sub)
        for name, group in ((graph.get("extra") or {}).get("groupNodes") or {}).items():
            defined.update({f"workflow/{name}", f"workflow>{name}"})
            walk(group)

    walk(workflow)
    return used, defined


def non_core_nodes(workflow: dict[str, Any], prompt: dict[str, Any], core: set[str]) -> list[str]:
    used, defined = workflow_types(workflow)
    in_prompt = {node.get("class_type") for node in prompt.values() if isinstance(node, dict)}
    return sorted((used - core - FRONTEND_NODES - defined) | {str(t) for t in in_prompt - core})


def extract(git_dir: Path, core: set[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    commit = git(git_dir, "rev-parse", "HEAD").decode().strip()
    names = [n for n in git(git_dir, "ls-tree", "-r", "--name-only", "HEAD").decode().splitlines()
             if n.lower().endswith(PICTURES)]
    records, absent, without = [], [], []
    for name in sorted(names):
        try:
            data = git(git_dir, "show", f"HEAD:{name}")
        except subprocess.CalledProcessError:
            absent.append(name)  # a large object the snapshot does not hold
            continue
        texts = read_picture_chunks(data)
        if "workflow" not in texts or "prompt" not in texts:
            without.append(name)
            continue
        non_core = non_core_nodes(json.loads(texts["workflow"]), json.loads(texts["prompt"]), core)
        records.append({"name": name, "core": not non_core, "non_core": non_core,
                        "workflow": texts["workflow"], "prompt": texts["prompt"]})
    header = {"source": "comfyanonymous/ComfyUI_examples", "commit": commit, "pictures": len(names),
              "pairs": len(records), "core_pairs": sum(r["core"] for r in records),
              "without_pair": without, "absent_from_snapshot": absent}
    return header, records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("git_dir", type=Path)
    parser.add_argument("--out", type=Path, default=DATA / "comfy_examples.jsonl.gz")
    parser.add_argument("--core", type=Path, default=CORE_NAMES,
                        help="core class names, one a line (or a JSON object keyed by them: /object_info)")
    args = parser.parse_args(argv)
    if args.core.suffix == ".json":
        core = set(json.loads(args.core.read_text()))
    else:
        core = core_names(args.core)
    header, records = extract(args.git_dir, core)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in [header, *records])
    args.out.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))  # reproducible bytes
    print(f"{header['pairs']} pairs ({header['core_pairs']} all core) from {header['pictures']} pictures; "
          f"{len(header['absent_from_snapshot'])} absent from the snapshot, "
          f"{len(header['without_pair'])} without a pair -> {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
