"""Write ComfyUI's /object_info entries of the toy V3 pack (tests/comfy_layer/v3_packs/v3_toy) to
tests/comfy_layer/data/v3_object_info.json, for tests/comfy_layer/test_comfy_v3.py to compare sdgraph's with.

Imports a ComfyUI checkout in this process (`--cpu`, a torchvision stand-in), loads the pack with ComfyUI's own
custom-node loader (by its comfy_entrypoint) and asks each of its node classes for the entry ComfyUI's
/object_info route gives (`GET_NODE_INFO_V1`, JSON round-tripped as the route sends it). Nothing is copied.
    python -m tools.comfy_reference.v3_object_info --comfyui /tmp/comfyui
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from tools.comfy_reference.make_references import write_torchvision_stand_in

ROOT = Path(__file__).resolve().parents[2]
PACK = ROOT / "tests" / "comfy_layer" / "v3_packs" / "v3_toy"
OUT = ROOT / "tests" / "comfy_layer" / "data" / "v3_object_info.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfyui", type=Path, required=True, help="an exported ComfyUI checkout")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="v3-object-info-"))
    write_torchvision_stand_in(scratch)
    sys.path[:0] = [str(scratch), str(args.comfyui)]
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import nodes

    before = set(nodes.NODE_CLASS_MAPPINGS)
    if not asyncio.run(nodes.load_custom_node(str(PACK), module_parent="custom_nodes")):
        raise SystemExit(f"ComfyUI did not load {PACK}")
    added = sorted(set(nodes.NODE_CLASS_MAPPINGS) - before)
    info = {name: json.loads(json.dumps(nodes.NODE_CLASS_MAPPINGS[name].GET_NODE_INFO_V1())) for name in added}
    import comfyui_version

    commit = (args.comfyui / "COMMIT").read_text().strip() if (args.comfyui / "COMMIT").is_file() else "unknown"
    OUT.write_text(json.dumps({"comfyui_version": comfyui_version.__version__, "comfyui_commit": commit,
                               "nodes": info}, indent=1, sort_keys=True) + "\n")
    print(f"{len(info)} nodes -> {OUT}")


if __name__ == "__main__":
    main()
