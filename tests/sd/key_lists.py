"""Reference key lists of real model files (`tests/sd/data/*.txt`: one `name (shape)` a line, `#` comments)."""
from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).parent / "data"


def reference_keys(stem: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in (DATA / f"{stem}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split(" ", 1)
            out[name] = tuple(json.loads("[" + shape.strip("()").rstrip(",") + "]"))
    return out
