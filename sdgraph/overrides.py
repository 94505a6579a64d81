"""`NODE.input=value` overrides of a workflow's literal inputs (the CLI's `--set`)."""
from __future__ import annotations

import json
from typing import Any

from sdgraph.workflow import Workflow, is_link


class OverrideError(ValueError):
    pass


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split `NODE.input=value`; the value is read as JSON when it parses, else taken as a string."""
    target, sep, raw = text.partition("=")
    node_ref, dot, input_name = target.rpartition(".")
    if not sep or not dot or not node_ref or not input_name:
        raise OverrideError(f"--set {text!r}: expected NODE.input=value (NODE is an id, a title or a class)")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return node_ref, input_name, value


def resolve_node(workflow: Workflow, ref: str) -> str:
    """A node id, or a title or class_type that names exactly one node."""
    if ref in workflow.nodes:
        return ref
    for label, pick in (("title", lambda n: n.title), ("class", lambda n: n.class_type)):
        matches = [node_id for node_id, node in workflow.nodes.items() if pick(node) == ref]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise OverrideError(f"{ref!r} matches the {label} of several nodes ({', '.join(matches)}); use an id")
    raise OverrideError(f"no node with id, title or class {ref!r}")


def primitive_targets(workflow: Workflow, title: str) -> list[tuple[str, str]]:
    """(node id, input) pairs that took their value from a UI PrimitiveNode with this title."""
    found = []
    for node_id, info in (workflow.origin or {}).items():
        for input_name, source in (info.get("primitives") or {}).items():
            if source == title and node_id in workflow.nodes:
                found.append((node_id, input_name))
    return found


def apply_override(workflow: Workflow, text: str) -> None:
    """Set one literal; NODE may also be the title of a UI file's PrimitiveNode, which sets all it feeds."""
    set_literal(workflow, *parse_override(text))


def set_literal(workflow: Workflow, node_ref: str, input_name: str, value: Any) -> None:
    """Set the literal `input_name` of the node `node_ref` names (an id, a unique title or class, or a UI
    PrimitiveNode's title); a list value is a literal list, not a link."""
    if isinstance(value, list):
        value = {"__value__": value}
    try:
        targets = [(resolve_node(workflow, node_ref), input_name)]
    except OverrideError:
        targets = primitive_targets(workflow, node_ref) if input_name == "value" else []
        if not targets:
            raise
    for node_id, name in targets:
        node = workflow.nodes[node_id]
        if is_link(node.inputs.get(name)):
            raise OverrideError(f"node {node_id} input {name!r} is a link, not a literal; it cannot be set")
        node.inputs[name] = value
