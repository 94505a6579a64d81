"""Derive sdgraph/uiformat/core_widgets.json from ComfyUI's /object_info dump.

    python tools/make_core_widgets.py [/work/shared/reference/comfyui-core-nodes.json]

The table holds, per core class, only the facts the UI converter needs: each widget's name and type in widget
order, with "c" when the frontend adds a control_after_generate value after it and "u" when it adds an upload
value. Sockets are left out: a UI file names them itself.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

SCALARS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UPLOADS = ("image_upload", "audio_upload", "video_upload", "file_upload")
OUT = Path(__file__).resolve().parent.parent / "sdgraph" / "uiformat" / "core_widgets.json"


def widget_row(name: str, spec: list) -> list[str] | None:
    head = spec[0] if spec else None
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    kind = "COMBO" if isinstance(head, list) else head
    if kind not in SCALARS or opts.get("forceInput"):
        return None
    flags = ""
    if opts.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed")):
        flags += "c"
    if any(opts.get(key) for key in UPLOADS):
        flags += "u"
    return [name, kind, flags] if flags else [name, kind]


def widgets_of(info: dict) -> list[list[str]]:
    rows = []
    order = info.get("input_order") or {}
    for section in ("required", "optional"):
        specs = (info.get("input") or {}).get(section) or {}
        for name in order.get(section) or list(specs):
            row = widget_row(name, specs.get(name) or [])
            if row:
                rows.append(row)
    return rows


def main(argv: list[str]) -> int:
    source = Path(argv[1] if len(argv) > 1 else "/work/shared/reference/comfyui-core-nodes.json")
    dump = json.loads(source.read_text(encoding="utf-8"))
    table = {name: widgets_of(info) for name, info in sorted(dump.items())}
    lines = [f"{json.dumps(name)}: {json.dumps(rows, separators=(',', ':'))}" for name, rows in table.items()]
    OUT.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(table)} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
