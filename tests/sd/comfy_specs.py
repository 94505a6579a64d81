"""Comparing sdgraph's node descriptions with ComfyUI's, as dumped in the shared reference (its `/object_info`
without prose: /work/shared/reference/comfyui-core-nodes.json)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REFERENCE = Path(os.environ.get("SDGRAPH_COMFY_REFERENCE",
                                "/work/shared/reference/comfyui-core-nodes.json"))
KEYS = ("input", "input_order", "output", "output_name", "category")


def reference() -> dict[str, Any]:
    if not REFERENCE.is_file():
        pytest.skip(f"ComfyUI's node reference is not at {REFERENCE}")
    return json.loads(REFERENCE.read_text())


def _entry(entry: Any) -> Any:
    """One input's description in a comparable form. Two spellings mean the same thing: ComfyUI's newer (v3) nodes
    write an empty option dict (`["IMAGE", {}]`) and a combo as `["COMBO", {"options": [...], "multiselect":
    false}]`, the older ones `["IMAGE"]` and `[[...]]`. Tooltips are prose and left out."""
    if isinstance(entry, str):  # a hidden input
        return entry
    head, opts = entry[0], dict(entry[1]) if len(entry) > 1 else {}
    opts.pop("tooltip", None)
    if head == "COMBO" and "options" in opts and opts.get("multiselect") is False:
        head = list(opts.pop("options"))
        opts.pop("multiselect")
    return [head, opts] if opts else [head]


def comparable(info: dict[str, Any]) -> dict[str, Any]:
    out = {key: info[key] for key in KEYS}
    out["input"] = {section: {name: _entry(value) for name, value in inputs.items()}
                    for section, inputs in info["input"].items()}
    return out


def assert_specs_match(described: dict[str, Any], names: list[str]) -> None:
    ref = reference()
    for name in names:
        assert name in described, f"{name} is not registered"
        assert comparable(described[name]) == comparable(ref[name]), name
