"""Which widgets a node class shows, in the order the UI format stores their values.

sdgraph's registry is asked first; ComfyUI core classes that sdgraph does not implement come from the derived
table `core_widgets.json` (see tools/make_core_widgets.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sdgraph.registry import Registry
from sdgraph.types import PRIMITIVE_TYPES

CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize", "increment-wrap", "decrement-wrap"})
SEED_NAMES = ("seed", "noise_seed")
UPLOAD_KEYS = ("image_upload", "audio_upload", "video_upload", "file_upload")
UPLOAD_VALUES = frozenset({"image", "audio", "video", "file"})


@dataclass(frozen=True)
class Widget:
    name: str
    type: str
    control: bool = False  # the frontend stores a control_after_generate value right after this one
    upload: bool = False  # the frontend may store an upload button's value right after this one


@lru_cache(maxsize=1)
def core_table() -> dict[str, tuple[Widget, ...]]:
    raw = json.loads((Path(__file__).with_name("core_widgets.json")).read_text(encoding="utf-8"))
    return {name: tuple(_row(row) for row in rows) for name, rows in raw.items()}


def _row(row: list[str]) -> Widget:
    flags = row[2] if len(row) > 2 else ""
    return Widget(row[0], row[1], control="c" in flags, upload="u" in flags)


def from_registry(registry: Registry, class_type: str) -> tuple[Widget, ...] | None:
    node = registry.get(class_type)
    if node is None:
        return None
    found = []
    for spec in node.spec.inputs:
        if spec.section == "hidden" or spec.force_input or spec.type not in PRIMITIVE_TYPES:
            continue
        if spec.default is None and spec.type != "COMBO":
            continue  # sdgraph's `Input(name, INT)`: a socket of a primitive type, shown without a widget
        control = bool(spec.options.get("control_after_generate")) or (spec.type == "INT" and spec.name in SEED_NAMES)
        upload = any(spec.options.get(key) for key in UPLOAD_KEYS)
        found.append(Widget(spec.name, spec.type, control, upload))
    return tuple(found)


def widgets_for(class_type: str, registry: Registry | None) -> tuple[Widget, ...] | None:
    """The class's widgets, or None when neither the registry nor the core table knows it."""
    if registry is not None:
        found = from_registry(registry, class_type)
        if found is not None:
            return found
    return core_table().get(class_type)


def known(class_type: str, registry: Registry | None) -> bool:
    return widgets_for(class_type, registry) is not None


def map_values(widgets: tuple[Widget, ...], values: Any) -> dict[str, Any]:
    """Pair stored `widgets_values` (a list in widget order, or a dict by name) with widget names."""
    if isinstance(values, dict):
        return {w.name: values[w.name] for w in widgets if w.name in values}
    if not isinstance(values, list):
        return {}
    out: dict[str, Any] = {}
    pos = 0
    for i, widget in enumerate(widgets):
        if pos >= len(values):
            break
        out[widget.name] = values[pos]
        pos += 1
        if pos < len(values) and _is_extra(widget, values[pos], widgets[i + 1] if i + 1 < len(widgets) else None):
            pos += 1
    return out


def _is_extra(widget: Widget, value: Any, following: Widget | None) -> bool:
    """Whether `value` belongs to a helper widget the frontend inserted after `widget`, not to the next one."""
    if widget.control:  # early frontends stored a "random after every run" toggle as a boolean there
        return isinstance(value, bool) or (isinstance(value, str) and value in CONTROL_VALUES)
    if widget.upload:
        return isinstance(value, str) and value in UPLOAD_VALUES and (following is None or following.type != "STRING")
    return False


def file_widgets(node: dict[str, Any]) -> tuple[Widget, ...]:
    """Widget order read from the file itself (newer frontends list every widget among `inputs`)."""
    found = []
    for slot in node.get("inputs") or []:
        widget = slot.get("widget") if isinstance(slot, dict) else None
        if isinstance(widget, dict) and isinstance(widget.get("name"), str):
            name = widget["name"]
            kind = str(slot.get("type", ""))
            found.append(Widget(name, kind, control=kind == "INT" and name in SEED_NAMES))
    return tuple(found)
