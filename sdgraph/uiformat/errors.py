"""Conversion problems, and the map that names a converted node the way the user's UI file does."""
from __future__ import annotations

from typing import Any

from sdgraph.workflow import WorkflowFormatError


class ConversionError(WorkflowFormatError):
    """The UI workflow cannot become an API prompt; `.problems` lists `{node_id, title, path, message}`."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__(describe(problems))


def describe(problems: list[dict[str, Any]]) -> str:
    return "; ".join(where(p) + p["message"] for p in problems) or "conversion failed"


def where(item: dict[str, Any]) -> str:
    """`node 5 'My sampler' in Upscale (#12): ` from a problem or a node-map entry."""
    node_id = item.get("node_id", item.get("ui_id"))
    if node_id is None:
        return ""
    text = f"node {node_id}"
    if item.get("title"):
        text += f" {item['title']!r}"
    if item.get("path"):
        text += f" in {item['path']}"
    return text + ": "


def name_node_errors(node_errors: dict[str, dict[str, Any]], origin: dict[str, dict[str, Any]] | None) -> None:
    """Add `ui_node` ({ui_id, title, path}) to each node_errors entry of a converted workflow, in place."""
    if not origin:
        return
    for api_id, entry in node_errors.items():
        info = origin.get(str(api_id))
        if info is None or not isinstance(entry, dict):
            continue
        entry["ui_node"] = {k: info[k] for k in ("ui_id", "title", "path") if k in info}
        dropped = info.get("dropped") or {}
        for err in entry.get("errors") or []:
            if not isinstance(err, dict):
                continue
            name = (err.get("extra_info") or {}).get("input_name")
            if name in dropped:
                err["ui_hint"] = dropped[name]
            elif err.get("type") == "missing_node_type":
                err["ui_hint"] = _missing_hint(entry.get("class_type"), info.get("pack"))


def _missing_hint(class_type: Any, pack: Any) -> str:
    from sdgraph.uiformat.widgets import core_table

    if class_type in core_table():
        return "a ComfyUI core node that sdgraph does not implement yet"
    return f"from the node pack {pack!r}; install it" if pack else "from a node pack that is not installed"
