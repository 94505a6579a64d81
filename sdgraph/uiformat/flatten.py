"""Subgraphs and old group nodes flattened into one graph of nodes with ComfyUI's `outer:inner` ids.

A subgraph instance and its definition's input node stay in the flat graph as virtual nodes, so that a link can
be followed through them later: into the instance's outputs (the definition's links to its output node), and out
of the definition's input node (the instance's input of that slot).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sdgraph.uiformat.graph import (SUBGRAPH_INPUT, SUBGRAPH_OUTPUT, Slot, input_slots, links_by_target, node_list,
                                    output_types, read_link)

VIRTUAL = {"Reroute": "reroute", "PrimitiveNode": "primitive", "Note": "note", "MarkdownNote": "note"}
MUTED, BYPASSED = 2, 4
MAX_DEPTH = 32


@dataclass(frozen=True)
class Source:
    gid: str
    slot: int


@dataclass
class FlatInput:
    name: str
    type: str
    widget: bool
    source: Source | None


@dataclass
class FlatNode:
    gid: str
    ui_id: Any
    type: str
    kind: str  # node | reroute | primitive | note | subgraph | subgraph_input
    mode: int
    title: str | None
    path: str
    raw: dict[str, Any]
    inputs: list[FlatInput] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    exits: dict[int, Source] = field(default_factory=dict)  # a subgraph instance's outputs, inside it
    owner: str | None = None  # a subgraph input node's instance


@dataclass
class Flat:
    nodes: dict[str, FlatNode] = field(default_factory=dict)
    problems: list[dict[str, Any]] = field(default_factory=list)


def flatten(workflow: dict[str, Any]) -> Flat:
    definitions = (workflow.get("definitions") or {}).get("subgraphs") or []
    subgraphs = {d["id"]: d for d in definitions if isinstance(d, dict) and isinstance(d.get("id"), str)}
    groups = ((workflow.get("extra") or {}).get("groupNodes")) or {}
    flat = Flat()
    _Expander(flat, subgraphs, groups if isinstance(groups, dict) else {}).expand(workflow, "", "", 0, ())
    return flat


def label(node: FlatNode | dict[str, Any]) -> str:
    if isinstance(node, FlatNode):
        return f"{node.title or node.type} (#{node.ui_id})"
    return f"{node.get('title') or node.get('type')} (#{node.get('id')})"


class _Expander:
    def __init__(self, flat: Flat, subgraphs: dict[Any, dict], groups: dict[str, dict]) -> None:
        self.flat, self.subgraphs, self.groups = flat, subgraphs, groups

    def expand(self, graph: dict[str, Any], prefix: str, path: str, forced: int, stack: tuple) -> None:
        targets = links_by_target(graph.get("links"))
        for node in node_list(graph):
            gid = prefix + str(node["id"])
            kind_type = str(node.get("type", ""))
            mode = MUTED if forced else _mode(node)
            inputs = []
            for i, slot in enumerate(input_slots(node)):
                link = targets.get((_key(node["id"]), i))
                source = Source(prefix + str(link.src), link.src_slot) if link else None
                inputs.append(FlatInput(slot.name, slot.type, slot.widget, source))
            inner = self._definition(kind_type, node)
            kind = "subgraph" if inner is not None else VIRTUAL.get(kind_type, "node")
            flat_node = FlatNode(gid, node["id"], kind_type, kind, mode, _title(node), path, node, inputs,
                                 output_types(node))
            self.flat.nodes[gid] = flat_node
            if inner is not None:
                self._enter(flat_node, inner, stack)

    def _definition(self, node_type: str, node: dict[str, Any]) -> dict[str, Any] | None:
        if node_type in self.subgraphs:
            return self.subgraphs[node_type]
        for sep in (">", "/"):
            head, found, name = node_type.partition(sep)
            if found and head == "workflow" and isinstance(self.groups.get(name), dict):
                return _group_as_subgraph(name, self.groups[name], input_slots(node))
        return None

    def _enter(self, instance: FlatNode, definition: dict[str, Any], stack: tuple) -> None:
        key = definition.get("id", instance.type)
        if key in stack or len(stack) >= MAX_DEPTH:
            self.flat.problems.append({"node": instance, "message": "subgraph contains itself"})
            instance.kind = "node"
            return
        prefix = instance.gid + ":"
        self.flat.nodes[prefix + str(SUBGRAPH_INPUT)] = FlatNode(
            prefix + str(SUBGRAPH_INPUT), SUBGRAPH_INPUT, "", "subgraph_input", 0, None, instance.path, {},
            owner=instance.gid)
        inner_path = f"{instance.path} > {label(instance)}" if instance.path else label(instance)
        forced = instance.mode if instance.mode in (MUTED, BYPASSED) else 0
        if definition.get("_group"):
            definition = _with_instance_values(definition, instance.raw.get("widgets_values"))
        self.expand(definition, prefix, inner_path, forced, (*stack, key))
        for raw in definition.get("links") or []:
            read = read_link(raw)
            if read is not None and read[1].dst == SUBGRAPH_OUTPUT:
                instance.exits[read[1].dst_slot] = Source(prefix + str(read[1].src), read[1].src_slot)


def _key(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value


def _mode(node: dict[str, Any]) -> int:
    mode = node.get("mode", 0)
    return mode if isinstance(mode, int) else 0


def _title(node: dict[str, Any]) -> str | None:
    title = node.get("title")
    return title if isinstance(title, str) and title else None


# ---- old group nodes (`extra.groupNodes`) as subgraph definitions ----------------------------------------------


def _group_as_subgraph(name: str, group: dict[str, Any], outer: list[Slot]) -> dict[str, Any]:
    """A group node definition rewritten as a subgraph for one instance (`outer`: its input slots).

    The inner sockets that no inner link feeds are the instance's sockets, in order; an inner widget converted
    to an input is fed by the instance's widget input of that name, if it has one (named `title widget` when
    two inner nodes share the widget name).
    """
    nodes = []
    for pos, raw in enumerate(group.get("nodes") or []):
        if isinstance(raw, dict):
            nodes.append({**raw, "id": raw.get("index", pos)})
    links = []
    internal_in, internal_out = set(), set()
    for raw in group.get("links") or []:
        if isinstance(raw, list) and len(raw) >= 4 and raw[0] is not None and raw[2] is not None:
            links.append({"id": f"g{len(links)}", "origin_id": raw[0], "origin_slot": raw[1], "target_id": raw[2],
                          "target_slot": raw[3], "type": raw[5] if len(raw) > 5 else "*"})
            internal_in.add((raw[2], raw[3]))
            internal_out.add((raw[0], raw[1]))
    external = {(e[0], e[1]) for e in group.get("external") or []
                if isinstance(e, list) and len(e) >= 2 and isinstance(e[0], (int, str))}
    sockets = iter([i for i, slot in enumerate(outer) if not slot.widget])
    widgets = {slot.name: i for i, slot in enumerate(outer) if slot.widget}
    out_k = 0
    for node in nodes:
        for j, slot in enumerate(input_slots(node)):
            if (node["id"], j) in internal_in:
                continue
            k = _widget_slot(widgets, node, slot.name) if slot.widget else next(sockets, None)
            if k is not None:
                links.append({"id": f"i{len(links)}", "origin_id": SUBGRAPH_INPUT, "origin_slot": k,
                              "target_id": node["id"], "target_slot": j, "type": slot.type})
        for j, _ in enumerate(output_types(node)):
            if (node["id"], j) not in internal_out or (node["id"], j) in external:
                links.append({"id": f"o{len(links)}", "origin_id": node["id"], "origin_slot": j,
                              "target_id": SUBGRAPH_OUTPUT, "target_slot": out_k, "type": "*"})
                out_k += 1
    return {"id": f"group:{name}", "_group": True, "nodes": nodes, "links": links}


def _widget_slot(widgets: dict[str, int], node: dict[str, Any], name: str) -> int | None:
    for key in (name, f"{node.get('title') or node.get('type')} {name}"):
        if key in widgets:
            return widgets.pop(key)
    return None


def _with_instance_values(definition: dict[str, Any], values: Any) -> dict[str, Any]:
    """The instance's widgets_values are its inner nodes' ones, concatenated; split them back when they fit."""
    nodes = definition["nodes"]
    sizes = [len(n.get("widgets_values") or []) if isinstance(n.get("widgets_values"), list) else 0 for n in nodes]
    if not isinstance(values, list) or sum(sizes) != len(values) or not values:
        return definition
    out, pos = [], 0
    for node, size in zip(nodes, sizes):
        out.append({**node, "widgets_values": values[pos:pos + size]} if size else node)
        pos += size
    return {**definition, "nodes": out}
