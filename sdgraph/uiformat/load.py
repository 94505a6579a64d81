"""One entry point for every workflow file users have: API JSON, UI JSON, or a picture carrying either."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdgraph.registry import Registry
from sdgraph.uiformat.convert import convert
from sdgraph.uiformat.errors import ConversionError
from sdgraph.workflow import Workflow, WorkflowFormatError, parse_workflow

PICTURE_SUFFIXES = (".png", ".webp")


def is_graph(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and isinstance(data.get("links"), list)


def is_api_prompt(data: Any) -> bool:
    return isinstance(data, dict) and bool(data) and all(
        isinstance(v, dict) and "class_type" in v for v in data.values())


def ui_graph(data: Any) -> dict[str, Any] | None:
    """The UI graph in `data`: the graph itself, or `{"workflow": graph}` without an API prompt beside it."""
    if is_graph(data):
        return data
    if isinstance(data, dict) and is_graph(data.get("workflow")) and not is_api_prompt(data.get("prompt")):
        return data["workflow"]
    return None


def is_ui_workflow(data: Any) -> bool:
    return ui_graph(data) is not None


def from_ui(graph: dict[str, Any], registry: Registry | None = None) -> Workflow:
    """Convert a UI graph; the Workflow keeps it as its layout and knows each node's UI id, title and path."""
    result = convert(graph, registry)
    if result.problems:
        raise ConversionError(result.problems)
    workflow = parse_workflow(result.prompt)
    workflow.layout = graph
    workflow.origin = result.origin
    return workflow


def load_any(source: str | Path | bytes | dict[str, Any], registry: Registry | None = None) -> Workflow:
    """A Workflow from a path, a file's bytes, or parsed JSON."""
    data = _read(source) if isinstance(source, (str, Path, bytes, bytearray)) else source
    graph = ui_graph(data)
    if graph is not None:
        return from_ui(graph, registry)
    return parse_workflow(data)


def _read(source: str | Path | bytes | bytearray) -> Any:
    raw = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    if raw.startswith(b"\x89PNG") or raw[:4] == b"RIFF":
        return _from_picture(raw, str(source) if not isinstance(source, (bytes, bytearray)) else "picture")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        name = source if not isinstance(source, (bytes, bytearray)) else "input"
        raise WorkflowFormatError(f"{name}: not valid JSON ({exc})") from None


def _from_picture(raw: bytes, name: str) -> Any:
    """The picture's API prompt (what ran) with its UI workflow as layout, else the UI workflow alone."""
    from sdgraph.uiformat.pictures import read_picture_chunks

    try:
        chunks = read_picture_chunks(raw)
    except ValueError as exc:
        raise WorkflowFormatError(f"{name}: {exc}") from None
    parsed = {key: _json(chunks[key]) for key in ("prompt", "workflow") if key in chunks}
    if is_api_prompt(parsed.get("prompt")):
        return {"prompt": parsed["prompt"], **({"workflow": parsed["workflow"]} if "workflow" in parsed else {})}
    if is_graph(parsed.get("workflow")):
        return parsed["workflow"]
    raise WorkflowFormatError(f"{name}: the picture carries no workflow or prompt")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None
