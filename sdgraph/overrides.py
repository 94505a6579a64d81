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


def apply_override(workflow: Workflow, text: str) -> None:
    node_ref, input_name, value = parse_override(text)
    node_id = resolve_node(workflow, node_ref)
    node = workflow.nodes[node_id]
    if is_link(node.inputs.get(input_name)):
        raise OverrideError(f"node {node_id} input {input_name!r} is a link, not a literal; it cannot be set")
    if isinstance(value, list):
        value = {"__value__": value}
    node.inputs[input_name] = value
