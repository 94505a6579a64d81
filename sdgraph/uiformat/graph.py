"""The UI (litegraph) graph read into plain records: links in either encoding, nodes with their input slots."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SUBGRAPH_INPUT = -10  # the id litegraph gives a subgraph's own input node inside its definition
SUBGRAPH_OUTPUT = -20


@dataclass(frozen=True)
class Link:
    src: int | str
    src_slot: int
    dst: int | str
    dst_slot: int
    type: str = "*"


def read_link(raw: Any) -> tuple[Any, Link] | None:
    """`[id, src, src_slot, dst, dst_slot, type]` or `{"id", "origin_id", ...}`; None if neither."""
    try:
        if isinstance(raw, dict):
            return raw["id"], Link(_id(raw["origin_id"]), int(raw["origin_slot"]), _id(raw["target_id"]),
                                   int(raw["target_slot"]), str(raw.get("type", "*")))
        if isinstance(raw, (list, tuple)) and len(raw) >= 5:
            kind = raw[5] if len(raw) > 5 else "*"
            return raw[0], Link(_id(raw[1]), int(raw[2]), _id(raw[3]), int(raw[4]), str(kind))
    except (KeyError, TypeError, ValueError):
        return None
    return None


def _id(value: Any) -> int | str:
    """Node ids are ints in most files and strings in some; compare them in one form."""
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"a node id must be an integer or a string, got {value!r:.40}")
    return value


def links_by_target(raw_links: Any) -> dict[tuple[Any, int], Link]:
    """Each link by the (node, input slot) it feeds."""
    found: dict[tuple[Any, int], Link] = {}
    for raw in raw_links if isinstance(raw_links, list) else []:
        read = read_link(raw)
        if read is not None:
            link = read[1]
            found[(link.dst, link.dst_slot)] = link
    return found


@dataclass
class Slot:
    """One input slot of a UI node: its name in the API prompt, its type, and whether it is a widget's."""

    name: str
    type: str
    widget: bool


def input_slots(node: dict[str, Any]) -> list[Slot]:
    slots = []
    for raw in node.get("inputs") or []:
        if not isinstance(raw, dict):
            slots.append(Slot("", "*", False))
            continue
        widget = raw.get("widget")
        name = widget.get("name") if isinstance(widget, dict) and isinstance(widget.get("name"), str) else None
        slots.append(Slot(name or str(raw.get("name", "")), str(raw.get("type", "*")), name is not None))
    return slots


def output_types(node: dict[str, Any]) -> list[str]:
    return [str(out.get("type", "*")) if isinstance(out, dict) else "*" for out in node.get("outputs") or []]


def node_list(graph: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in graph.get("nodes") or []
            if isinstance(n, dict) and isinstance(n.get("id"), (int, str)) and not isinstance(n["id"], bool)]
