"""UI workflow -> API prompt, with the semantics of ComfyUI's frontend when it queues a graph.

Virtual nodes (Reroute, PrimitiveNode, notes, subgraph boundaries) vanish: a link is followed through them to a
real node's output or to a literal. Muted nodes (mode 2) are left out and the inputs they fed are dropped;
bypassed nodes (mode 4) hand on an input of the type that was asked of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdgraph.registry import Registry
from sdgraph.uiformat.errors import ConversionError
from sdgraph.uiformat.flatten import BYPASSED, MUTED, Flat, FlatNode, Source, flatten, label
from sdgraph.uiformat.widgets import file_widgets, map_values, widgets_for

MAX_HOPS = 10_000


@dataclass(frozen=True)
class Value:
    value: Any
    source: FlatNode | None = field(default=None, compare=False)  # the PrimitiveNode it came from


@dataclass(frozen=True)
class Missing:
    muted: FlatNode | None = None  # the muted node the input came from, if that is why


Resolved = Source | Value | Missing


@dataclass
class Conversion:
    prompt: dict[str, dict[str, Any]] = field(default_factory=dict)
    origin: dict[str, dict[str, Any]] = field(default_factory=dict)  # API id -> {ui_id, title, path, dropped}
    problems: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)


def convert(workflow: dict[str, Any], registry: Registry | None = None) -> Conversion:
    """Convert, collecting problems instead of raising (a malformed file is one problem, not a crash)."""
    try:
        return _convert(workflow, registry)
    except (TypeError, KeyError, ValueError, IndexError, AttributeError, RecursionError) as exc:
        message = f"malformed UI workflow ({type(exc).__name__}: {str(exc)[:200]})"
        return Conversion(problems=[{"node_id": None, "title": "", "path": "", "message": message}])


def _convert(workflow: dict[str, Any], registry: Registry | None) -> Conversion:
    flat = flatten(workflow)
    out = Conversion()
    for item in flat.problems:
        out.problems.append(_problem(item["node"], item["message"]))
    for node in flat.nodes.values():
        if node.kind == "node" and node.mode not in (MUTED, BYPASSED):
            _emit(flat, node, registry, out)
    return out


def ui_to_api(workflow: dict[str, Any], registry: Registry | None = None) -> dict[str, Any]:
    result = convert(workflow, registry)
    if result.problems:
        raise ConversionError(result.problems)
    return result.prompt


def _problem(node: FlatNode, message: str) -> dict[str, Any]:
    return {"node_id": node.ui_id, "title": node.title or node.type, "path": node.path, "message": message}


def _emit(flat: Flat, node: FlatNode, registry: Registry | None, out: Conversion) -> None:
    widgets = widgets_for(node.type, registry)
    if widgets is None:
        out.problems.append(_problem(node, _unknown(node)))
        widgets = file_widgets(node.raw)
    # a widget always holds a value in the editor; null only comes from files written without one (api_to_ui)
    inputs = {k: v for k, v in map_values(widgets, node.raw.get("widgets_values")).items() if v is not None}
    dropped: dict[str, str] = {}
    fed: dict[str, str] = {}  # input -> title of the PrimitiveNode whose value it took
    for slot in node.inputs:
        if slot.source is None or not slot.name:
            continue
        found = resolve(flat, slot.source, slot.type)
        if isinstance(found, Source):
            inputs[slot.name] = [found.gid, found.slot]
        elif isinstance(found, Value):
            inputs[slot.name] = found.value
            if found.source is not None and found.source.title:
                fed[slot.name] = found.source.title
        elif found.muted is not None:
            inputs.pop(slot.name, None)
            dropped[slot.name] = f"input {slot.name!r} came from muted node {label(found.muted)}"
            out.warnings.append(_problem(node, f"{dropped[slot.name]}; it is left unconnected"))
    title = node.title or _display_name(node.type, registry)
    out.prompt[node.gid] = {"inputs": inputs, "class_type": node.type, "_meta": {"title": title}}
    out.origin[node.gid] = {"ui_id": node.ui_id, "title": title, "path": node.path, "dropped": dropped}
    if fed:
        out.origin[node.gid]["primitives"] = fed
    if _pack(node):
        out.origin[node.gid]["pack"] = _pack(node)


def _pack(node: FlatNode) -> str | None:
    props = node.raw.get("properties") if isinstance(node.raw.get("properties"), dict) else {}
    pack = props.get("cnr_id") or props.get("aux_id")
    return pack if isinstance(pack, str) and pack and pack != "comfy-core" else None


def _unknown(node: FlatNode) -> str:
    pack = _pack(node)
    hint = f" (from the node pack {pack!r}; install it)" if pack else ""
    if (node.raw.get("properties") or {}).get("cnr_id") == "comfy-core":
        hint = " (a ComfyUI core node newer than sdgraph knows)"
    return f"unknown node type {node.type!r}{hint}"


def _display_name(class_type: str, registry: Registry | None) -> str:
    found = registry.get(class_type) if registry is not None else None
    return found.spec.display_name if found is not None else class_type


def resolve(flat: Flat, source: Source, wanted: str) -> Resolved:
    """Follow a link from `source` through virtual and bypassed nodes to a real output or a value."""
    for _ in range(MAX_HOPS):
        node = flat.nodes.get(source.gid)
        if node is None or node.kind == "note":
            return Missing()
        step = _step(flat, node, source.slot, wanted)
        if not isinstance(step, Source) or step == source:  # a value, nothing, or a real node's own output
            return step
        source = step
    return Missing()


def _step(flat: Flat, node: FlatNode, slot: int, wanted: str) -> Resolved:
    """One hop: the real output itself (same node), the next source, a value, or nothing."""
    if node.kind in ("reroute", "primitive", "subgraph_input", "subgraph"):
        return _virtual_step(flat, node, slot, wanted)
    if node.mode == MUTED:
        return Missing(node)
    if node.mode == BYPASSED:
        return _bypass(node, slot, wanted)
    return Source(node.gid, slot)


def _virtual_step(flat: Flat, node: FlatNode, slot: int, wanted: str) -> Resolved:
    if node.kind == "reroute":
        return node.inputs[0].source or Missing() if node.inputs else Missing()
    if node.kind == "primitive":
        values = node.raw.get("widgets_values")
        return Value(values[0], node) if isinstance(values, list) and values else Missing()
    if node.kind == "subgraph":
        if node.mode == MUTED:
            return Missing(node)
        if node.mode == BYPASSED:
            return _bypass(node, slot, wanted)
        return node.exits.get(slot) or Missing()
    instance = flat.nodes[node.owner] if node.owner else None
    if instance is None or slot >= len(instance.inputs):
        return Missing()
    outer = instance.inputs[slot]
    if outer.source is not None:
        return outer.source
    promoted = _promoted_values(instance)
    return Value(promoted[outer.name]) if outer.name in promoted else Missing()


def _promoted_values(instance: FlatNode) -> dict[str, Any]:
    """The instance's own widget values, paired with its widget inputs in order (or by name)."""
    values = instance.raw.get("widgets_values")
    if isinstance(values, dict):
        return values
    names = [slot.name for slot in instance.inputs if slot.widget]
    if not isinstance(values, list) or len(values) != len(names):
        return {}  # values that do not pair one to one are not trusted; the inner widget keeps its own
    return dict(zip(names, values))


def _bypass(node: FlatNode, slot: int, wanted: str) -> Resolved:
    """A bypassed node passes on its input of the type asked for: the same slot first, else the first match."""
    kind = node.outputs[slot] if slot < len(node.outputs) else wanted
    order = ([slot] if slot < len(node.inputs) else []) + list(range(len(node.inputs)))
    for i in order:
        candidate = node.inputs[i]
        if candidate.source is not None and _types_match(candidate.type, kind):
            return candidate.source
    return Missing()


def _types_match(a: str, b: str) -> bool:
    if a == "*" or b == "*":
        return True
    return bool(set(a.upper().split(",")) & set(b.upper().split(",")))
