"""Graph expansion: a node returns new nodes that run in its place, and its outputs are theirs.

A node returns `NodeOutput(values, expand=graph)` (or the ecosystem's `{"result": ..., "expand": graph}`), where
`graph` is API-format nodes `{id: {"class_type": ..., "inputs": {...}}}` whose inputs may link to the workflow's
nodes, to each other, or hold any Python value, and `values` may hold links into it. Ids must be new to the run:
`Subgraph` makes them so, prefixing them with the expanding node's id and call. The new nodes are *ephemeral*:
they are cached like any node (under the signature of their inputs), and events show them as their parent
(`display_node`), or as the node an `override_display_id` names.
"""
from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from sdgraph.node import NodeDef
from sdgraph.registry import Registry
from sdgraph.validate import PreparedNode
from sdgraph.workflow import Link, is_link, unwrap_literal


class ExpansionError(ValueError):
    """An expansion that cannot run: the message names the new node and what is wrong with it."""


# ---- building subgraphs -----------------------------------------------------------------------------------

@dataclass
class _Call:
    node_id: str
    index: int
    graphs: int = 0


_current_call: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("sdgraph_current_call", default=None)


def call_scope(node_id: str, index: int, graphs: int = 0) -> contextvars.Token:
    """Mark the node call in progress (and how many subgraphs it has built), so subgraphs it builds get ids no
    other call can make."""
    return _current_call.set(_Call(node_id, index, graphs))


def end_call_scope(token: contextvars.Token) -> None:
    _current_call.reset(token)


def new_prefix() -> str:
    """`<node id>.<call index>.<graph index>.` for the call in progress (counting its subgraphs)."""
    call = _current_call.get()
    if call is None:
        call = _Call("", 0)
        _current_call.set(call)
    prefix = f"{call.node_id}.{call.index}.{call.graphs}."
    call.graphs += 1
    return prefix


@dataclass
class SubgraphNode:
    id: str
    class_type: str
    inputs: dict[str, Any]
    override_display_id: str | None = None

    def out(self, index: int) -> list[Any]:
        """A link to output `index`, for another node's input or for the expanding node's result."""
        return [self.id, index]

    def set_input(self, name: str, value: Any) -> None:
        if value is None:
            self.inputs.pop(name, None)
        else:
            self.inputs[name] = value

    def get_input(self, name: str) -> Any:
        return self.inputs.get(name)

    def set_override_display_id(self, display_id: str | None) -> None:
        self.override_display_id = display_id

    def serialize(self) -> dict[str, Any]:
        info: dict[str, Any] = {"class_type": self.class_type, "inputs": self.inputs}
        if self.override_display_id is not None:
            info["override_display_id"] = self.override_display_id
        return info


@dataclass
class Subgraph:
    """Builds the graph a node expands into: `g.node("Add", a=1, b=other.out(0))`, then `g.finalize()`."""

    prefix: str = field(default_factory=new_prefix)
    nodes: dict[str, SubgraphNode] = field(default_factory=dict)
    _next_id: int = 1

    def node(self, class_type: str, id: str | None = None, **inputs: Any) -> SubgraphNode:
        if id is None:
            id = str(self._next_id)
            self._next_id += 1
        full_id = self.prefix + id
        if full_id not in self.nodes:
            self.nodes[full_id] = SubgraphNode(full_id, class_type, inputs)
        return self.nodes[full_id]

    def lookup_node(self, id: str) -> SubgraphNode | None:
        return self.nodes.get(self.prefix + id)

    def remove_node(self, id: str) -> None:
        del self.nodes[self.prefix + id]

    def replace_node_output(self, id: str, index: int, value: Any) -> None:
        """Point every input linked to output `index` of node `id` at `value` instead (None unlinks them)."""
        target = [self.prefix + id, index]
        for node in self.nodes.values():
            for name, current in list(node.inputs.items()):
                if is_link(current) and [str(current[0]), current[1]] == target:
                    node.set_input(name, value)

    def finalize(self) -> dict[str, Any]:
        return {node_id: node.serialize() for node_id, node in self.nodes.items()}


# ---- the run's graph as it grows --------------------------------------------------------------------------

class DynamicPrompt:
    """The prompt's nodes plus those expansions added, as API-format dicts (the ecosystem's DYNPROMPT)."""

    def __init__(self, original: Callable[[], dict[str, Any]]) -> None:
        self._original = original
        self.ephemeral: dict[str, dict[str, Any]] = {}
        self.parents: dict[str, str] = {}
        self.display: dict[str, str] = {}

    def get_original_prompt(self) -> dict[str, Any]:
        return self._original()

    def has_node(self, node_id: str) -> bool:
        return node_id in self.ephemeral or node_id in self._original()

    def get_node(self, node_id: str) -> dict[str, Any]:
        if node_id in self.ephemeral:
            return self.ephemeral[node_id]
        original = self._original()
        if node_id not in original:
            raise KeyError(f"node {node_id} is not in the prompt")
        return original[node_id]

    def add_ephemeral_node(self, node_id: str, info: dict[str, Any], parent_id: str, display_id: str) -> None:
        self.ephemeral[node_id] = info
        self.parents[node_id] = parent_id
        self.display[node_id] = display_id

    def get_real_node_id(self, node_id: str) -> str:
        while node_id in self.parents:
            node_id = self.parents[node_id]
        return node_id

    def get_parent_node_id(self, node_id: str) -> str | None:
        return self.parents.get(node_id)

    def get_display_node_id(self, node_id: str) -> str:
        while node_id in self.display and self.display[node_id] != node_id:
            node_id = self.display[node_id]
        return node_id

    def all_node_ids(self) -> set[str]:
        return set(self._original()) | set(self.ephemeral)


# ---- checking an expansion --------------------------------------------------------------------------------

def prepare_expansion(graph: Any, parent: str, registry: Registry,
                      existing: Callable[[str], NodeDef | None]) -> tuple[dict[str, PreparedNode], list[str]]:
    """The new nodes ready to run, in dependency order; `existing(id)` gives the definition of a node the run
    already has. Values are taken as given (any Python object; ranges are not checked, as in the ecosystem),
    but every node, class, link and required input is checked, and the first problem raises ExpansionError."""
    if not isinstance(graph, Mapping):
        raise ExpansionError(f"node {parent} expanded into {type(graph).__name__}, not a dict of nodes")
    graph = {str(node_id): info for node_id, info in graph.items()}
    defs: dict[str, NodeDef] = {}
    for node_id, info in graph.items():
        if existing(node_id) is not None:
            raise ExpansionError(f"node {parent} expanded into node {node_id!r}, which the prompt already has; "
                                 "ids of new nodes must be unique (build them with a Subgraph)")
        if not isinstance(info, Mapping) or not isinstance(info.get("class_type"), str):
            raise ExpansionError(f"node {parent} expanded into node {node_id!r} without a class_type")
        node_def = registry.get(info["class_type"])
        if node_def is None:
            raise ExpansionError(f"node {parent} expanded into node {node_id!r} of unknown type "
                                 f"{info['class_type']!r}")
        defs[node_id] = node_def
    prepared = {node_id: _prepare(node_id, graph[node_id], defs[node_id], defs, existing) for node_id in defs}
    return prepared, _order(prepared, parent)


def _prepare(node_id: str, info: Mapping[str, Any], node_def: NodeDef, defs: dict[str, NodeDef],
             existing: Callable[[str], NodeDef | None]) -> PreparedNode:
    inputs = info.get("inputs") or {}
    if not isinstance(inputs, Mapping):
        raise ExpansionError(f"expanded node {node_id} ({node_def.class_type}): inputs must be a dict")
    literals: dict[str, Any] = {}
    links: dict[str, Link] = {}
    for spec in node_def.spec.inputs:
        if spec.section == "hidden":
            continue
        value = inputs.get(spec.name)
        if is_link(value):
            links[spec.name] = _checked_link(node_id, node_def, spec.name, value, defs, existing)
        elif value is not None:
            literals[spec.name] = unwrap_literal(value)
        elif spec.section == "required":
            raise ExpansionError(f"expanded node {node_id} ({node_def.class_type}): required input "
                                 f"{spec.name!r} is missing")
    if node_def.extra_input is not None:  # inputs the spec does not list, for a node that takes them
        for name in [name for name in inputs if name not in node_def.spec.inputs_by_name]:
            value = inputs[name]
            if node_def.extra_input(name) is None or value is None:
                continue
            if is_link(value):
                links[name] = _checked_link(node_id, node_def, name, value, defs, existing)
            else:
                literals[name] = unwrap_literal(value)
    return PreparedNode(node_id, node_def, literals, links)


def _checked_link(node_id: str, node_def: NodeDef, name: str, value: Any, defs: dict[str, NodeDef],
                  existing: Callable[[str], NodeDef | None]) -> Link:
    source, index = str(value[0]), int(value[1])
    source_def = defs.get(source) or existing(source)
    where = f"expanded node {node_id} ({node_def.class_type}), input {name!r}"
    if source_def is None:
        raise ExpansionError(f"{where}: links to node {source!r}, which does not exist")
    if not 0 <= index < len(source_def.spec.outputs):
        raise ExpansionError(f"{where}: node {source!r} ({source_def.class_type}) has "
                             f"{len(source_def.spec.outputs)} output(s), not an output {index}")
    return source, index


def _order(prepared: dict[str, PreparedNode], parent: str) -> list[str]:
    """The new nodes, each after the new nodes it links to (links to older nodes are already resolvable)."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1: on the path, 2: placed
    for start in prepared:
        if state.get(start) == 2:
            continue
        state[start] = 1
        stack = [(start, iter(prepared[start].links.values()))]
        while stack:
            node_id, sources = stack[-1]
            for source, _ in sources:
                if source in prepared and state.get(source) != 2:
                    if state.get(source) == 1:
                        raise ExpansionError(f"node {parent} expanded into a cycle through node {source}")
                    state[source] = 1
                    stack.append((source, iter(prepared[source].links.values())))
                    break
            else:
                stack.pop()
                state[node_id] = 2
                order.append(node_id)
    return order


_PLAIN = (str, int, float, bool, type(None))


def is_plain(value: Any, depth: int = 0) -> bool:
    """JSON-born data, whose repr is a faithful cache key; anything else (a tensor, a model) is not."""
    if isinstance(value, _PLAIN):
        return True
    if depth > 32:
        return False
    if isinstance(value, (list, tuple)):
        return all(is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v, depth + 1) for k, v in value.items())
    return False
