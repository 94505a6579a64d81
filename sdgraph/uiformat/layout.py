"""API prompt -> UI workflow: nodes in columns by their depth in the graph, links in litegraph's array form."""
from __future__ import annotations

from typing import Any

from sdgraph.registry import Registry
from sdgraph.uiformat.widgets import Widget, widgets_for
from sdgraph.workflow import is_link

COLUMN_WIDTH, NODE_WIDTH, ROW_GAP, SLOT_HEIGHT, HEADER = 380, 320, 40, 24, 40


def api_to_ui(prompt: dict[str, Any], registry: Registry | None = None,
              positions: dict[str, Any] | None = None) -> dict[str, Any]:
    """`positions`: API id -> [x, y] for nodes that already have a place (the editor's); the rest are laid out."""
    ids = _ui_ids(prompt)
    links, outputs = _links(prompt, ids)
    depth = _depths(prompt)
    nodes, bottoms = [], {}
    for order, api_id in enumerate(sorted(prompt, key=lambda k: (depth[k], _sort_key(k)))):
        node = _node(api_id, prompt[api_id], ids, links, outputs.get(api_id, {}), registry)
        column = depth[api_id]
        y = bottoms.get(column, 0)
        node["pos"] = [column * COLUMN_WIDTH, y]
        node["order"] = order
        bottoms[column] = y + node["size"][1] + ROW_GAP
        given = (positions or {}).get(api_id)
        if given is not None:
            node["pos"] = [given[0], given[1]]
        nodes.append(node)
    return {"last_node_id": max(ids.values(), default=0), "last_link_id": len(links),
            "nodes": nodes, "links": [list(link) for link in links], "groups": [], "config": {}, "extra": {},
            "version": 0.4}


def _sort_key(api_id: str) -> tuple:
    return (0, int(api_id), "") if api_id.isdigit() else (1, 0, api_id)


def _ui_ids(prompt: dict[str, Any]) -> dict[str, int]:
    """API ids that are integers stay; others (`12:3`) get the next free integers."""
    ids = {k: int(k) for k in prompt if k.isdigit()}
    free = max(ids.values(), default=0)
    for k in sorted(k for k in prompt if k not in ids):
        free += 1
        ids[k] = free
    return ids


def _links(prompt: dict[str, Any], ids: dict[str, int]) -> tuple[list[tuple], dict[str, dict[int, list[int]]]]:
    links: list[tuple] = []
    outputs: dict[str, dict[int, list[int]]] = {}
    for api_id, node in prompt.items():
        for value in (node.get("inputs") or {}).values():
            if is_link(value) and str(value[0]) in prompt:
                link_id = len(links) + 1
                links.append((link_id, ids[str(value[0])], value[1], ids[api_id], None, "*"))
                outputs.setdefault(str(value[0]), {}).setdefault(value[1], []).append(link_id)
    return links, outputs


def _depths(prompt: dict[str, Any]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(api_id: str, trail: frozenset) -> int:
        if api_id in depth:
            return depth[api_id]
        sources = [str(v[0]) for v in (prompt[api_id].get("inputs") or {}).values()
                   if is_link(v) and str(v[0]) in prompt and str(v[0]) not in trail]
        depth[api_id] = 1 + max((visit(s, trail | {api_id}) for s in sources), default=-1)
        return depth[api_id]

    for api_id in prompt:
        visit(api_id, frozenset())
    return depth


def _node(api_id: str, api: dict[str, Any], ids: dict[str, int], links: list[tuple],
          outputs: dict[int, list[int]], registry: Registry | None) -> dict[str, Any]:
    class_type = api.get("class_type", "")
    inputs = api.get("inputs") or {}
    widgets = widgets_for(class_type, registry) or ()
    widget_names = {w.name for w in widgets}
    slots = []
    for name, value in inputs.items():
        if is_link(value) and str(value[0]) in ids:
            link_index = _claim(links, ids[api_id], len(slots))
            slot = {"name": name, "type": _socket_type(class_type, name, registry), "link": link_index}
            if name in widget_names:
                slot["widget"] = {"name": name}
            slots.append(slot)
    out_types = _output_types(class_type, registry, outputs)
    out_slots = [{"name": kind, "type": kind, "links": outputs.get(i, []), "slot_index": i}
                 for i, kind in enumerate(out_types)]
    node = {"id": ids[api_id], "type": class_type, "pos": [0, 0], "size": [NODE_WIDTH, _height(slots, widgets)],
            "flags": {}, "order": 0, "mode": 0, "inputs": slots, "outputs": out_slots,
            "properties": {"Node name for S&R": class_type}, "widgets_values": _widget_values(widgets, inputs)}
    title = (api.get("_meta") or {}).get("title")
    if isinstance(title, str) and title and title != class_type:
        node["title"] = title
    return node


def _claim(links: list[tuple], ui_id: int, slot: int) -> int:
    """Give the next unplaced link into this node its input slot; links were made in input order."""
    for i, link in enumerate(links):
        if link[3] == ui_id and link[4] is None:
            links[i] = (*link[:4], slot, link[5])
            return link[0]
    raise AssertionError("a link was counted but not made")


def _widget_values(widgets: tuple[Widget, ...], inputs: dict[str, Any]) -> list[Any]:
    values = []
    for widget in widgets:
        value = inputs.get(widget.name)
        values.append(None if is_link(value) else value)
        if widget.control:
            values.append("fixed")  # the prompt ran with this seed; keep it when the file is queued again
    return values


def _height(slots: list, widgets: tuple) -> int:
    return HEADER + SLOT_HEIGHT * (len(slots) + len(widgets) + 1)


def _socket_type(class_type: str, name: str, registry: Registry | None) -> str:
    found = registry.get(class_type) if registry is not None else None
    spec = found.spec.inputs_by_name.get(name) if found is not None else None
    return spec.type if spec is not None else "*"


def _output_types(class_type: str, registry: Registry | None, used: dict[int, list[int]]) -> list[str]:
    found = registry.get(class_type) if registry is not None else None
    if found is not None:
        return [out.type for out in found.spec.outputs]
    return ["*"] * (max(used, default=-1) + 1)
