"""Check a whole workflow against the registry before anything runs, and report every problem at once.

The report uses the ecosystem's shape: `{node_id: {"errors": [{type, message, details, extra_info}],
"class_type", "dependent_outputs"}}`. Output nodes whose inputs and ancestors are all valid still run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import networkx as nx

from sdgraph.node import NodeDef
from sdgraph.paths import Dirs
from sdgraph.registry import Registry
from sdgraph.spec import InputSpec
from sdgraph.types import BOOLEAN, COMBO, FLOAT, INT, PRIMITIVE_TYPES, STRING, types_compatible
from sdgraph.workflow import Link, Workflow, is_wrapped_literal, unwrap_literal


@dataclass
class PreparedNode:
    """A node that passed validation: its definition, coerced literals and links, ready to run."""

    node_id: str
    node: NodeDef
    literals: dict[str, Any]
    links: dict[str, Link]


@dataclass
class ValidationReport:
    outputs: list[str] = field(default_factory=list)
    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    prepared: dict[str, PreparedNode] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "error": self.error, "node_errors": self.node_errors, "outputs": self.outputs}


def problem(type_: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"type": type_, "message": message, "details": details, "extra_info": extra}


# ---- literal coercion ---------------------------------------------------------------------------------------


class CoercionError(ValueError):
    pass


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise CoercionError("a boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise CoercionError(f"{value!r} is not an integer")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise CoercionError("a boolean is not a number")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise CoercionError(f"{value!r} is not a number") from None
    else:
        raise CoercionError(f"{value!r} is not a number")
    if math.isnan(result):
        raise CoercionError("NaN is not allowed")
    return result


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise CoercionError(f"{value!r} is not a string")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise CoercionError(f"{value!r} is not a boolean")


COERCE: dict[str, Callable[[Any], Any]] = {INT: _to_int, FLOAT: _to_float, STRING: _to_str, BOOLEAN: _to_bool}
WIDGET_TYPES = frozenset(COERCE) | {COMBO}


def check_literal(spec: InputSpec, raw: Any, skip_range: bool, dirs: Dirs | None = None) -> tuple[Any, dict[str, Any] | None]:
    """Coerce one literal input and check its range or choices; returns (value, problem or None)."""
    name = spec.name
    if spec.type == COMBO:
        if skip_range:
            return raw, None
        choices = spec.current_choices(dirs)
        if raw not in choices:
            shown = choices if len(choices) <= 20 else [*choices[:20], "..."]
            return raw, problem("value_not_in_list", "Value not in list",
                                f"{name}: {raw!r} not in {shown}", **_info(spec, raw, dirs))
        return raw, None
    kind = spec.type if spec.type in COERCE else spec.options.get("widgetType", spec.type)  # a socket with a widget
    coerce = COERCE.get(kind)
    if coerce is None:
        return raw, problem("invalid_input_type", f"Input {name!r} of type {spec.type} needs a link, not a value",
                            f"{name}: got the literal {raw!r}; connect an output of type {spec.type}",
                            **_info(spec, raw, dirs))
    try:
        value = coerce(raw)
    except CoercionError as exc:
        return raw, problem("invalid_input_type", f"Failed to convert an input value to a {spec.type} value",
                            f"{name}: {exc}", **_info(spec, raw, dirs))
    if skip_range or kind not in (INT, FLOAT):
        return value, None
    if spec.min is not None and value < spec.min:
        return value, problem("value_smaller_than_min", f"Value {value} smaller than min of {spec.min}",
                              f"{name}", **_info(spec, raw, dirs))
    if spec.max is not None and value > spec.max:
        return value, problem("value_bigger_than_max", f"Value {value} bigger than max of {spec.max}",
                              f"{name}", **_info(spec, raw, dirs))
    return value, None


def _info(spec: InputSpec, raw: Any, dirs: Dirs | None) -> dict[str, Any]:
    return {"input_name": spec.name, "input_config": spec.describe(dirs), "received_value": raw}


# ---- per-node checks ---------------------------------------------------------------------------------------


def _check_link(defs: dict[str, NodeDef | None], workflow: Workflow, spec: InputSpec, link: Link
                ) -> dict[str, Any] | None:
    source_id, index = link
    if source_id not in defs:
        return problem("bad_linked_input", "Bad linked input, the source node does not exist",
                       f"{spec.name}: links to node {source_id!r}, which is not in the workflow", **_info(spec, [source_id, index], None))
    source_def = defs[source_id]
    if source_def is None:
        return None  # reported on the source node itself
    outputs = source_def.spec.outputs
    if not 0 <= index < len(outputs):
        return problem("bad_linked_input", "Bad linked input, the output index does not exist",
                       f"{spec.name}: node {source_id!r} ({source_def.class_type}) has {len(outputs)} output(s), "
                       f"not an output {index}", **_info(spec, [source_id, index], None))
    received = outputs[index].type
    if received != spec.type and not types_compatible(received, spec.type):
        return problem("return_type_mismatch", "Return type mismatch between linked nodes",
                       f"{spec.name}: received_type({received}) mismatch input_type({spec.type})",
                       received_type=received, linked_node=[source_id, index], **_info(spec, [source_id, index], None))
    return None


def _check_node(defs: dict[str, NodeDef | None], workflow: Workflow, node_id: str, node_def: NodeDef,
                links: dict[str, Link], dirs: Dirs | None) -> tuple[PreparedNode, list[dict[str, Any]]]:
    given = workflow.nodes[node_id].inputs
    errors: list[dict[str, Any]] = []
    literals: dict[str, Any] = {}
    node_links: dict[str, Link] = {}
    custom = node_def.custom_validated
    for spec in node_def.spec.inputs:
        name = spec.name
        if name in links:
            node_links[name] = links[name]
            issue = _check_link(defs, workflow, spec, links[name])
        elif (raw := given.get(name)) is not None and is_wrapped_literal(raw) and spec.type not in WIDGET_TYPES:
            literals[name], issue = raw["__value__"], None  # a value for a socket: the node takes it as it is
        elif raw is not None:
            literals[name], issue = check_literal(spec, unwrap_literal(raw), name in custom, dirs)
        elif spec.section == "required":
            issue = problem("required_input_missing", "Required input is missing", name,
                            input_name=name, input_config=spec.describe(dirs))
        else:
            continue
        if issue is not None:
            errors.append(issue)
    if node_def.extra_input is not None:
        errors.extend(_extra_inputs(defs, workflow, node_def, given, links, literals, node_links))
    if node_def.validate is not None and not errors:
        errors.extend(_custom_check(node_def, literals, dirs or Dirs()))
    return PreparedNode(node_id, node_def, literals, node_links), errors


def _extra_inputs(defs: dict[str, NodeDef | None], workflow: Workflow, node_def: NodeDef, given: dict[str, Any],
                  links: dict[str, Link], literals: dict[str, Any], node_links: dict[str, Link]
                  ) -> list[dict[str, Any]]:
    """Inputs the prompt gives that the spec does not list, for a node that takes them (NodeDef.extra_input):
    links are checked like declared ones, literals are passed as they are (as ComfyUI does)."""
    errors = []
    declared = node_def.spec.inputs_by_name
    for name in [name for name in given if name not in declared]:
        spec = node_def.extra_input(name) if node_def.extra_input is not None else None
        if spec is None:
            continue
        if name in links:
            node_links[name] = links[name]
            issue = _check_link(defs, workflow, spec, links[name])
            if issue is not None:
                errors.append(issue)
        elif given[name] is not None:
            literals[name] = unwrap_literal(given[name])
    return errors


def _custom_check(node_def: NodeDef, literals: dict[str, Any], dirs: Dirs) -> list[dict[str, Any]]:
    try:
        verdict = node_def.validate(literals, dirs)  # type: ignore[misc]
    except Exception as exc:  # a plugin's validator must not take validation down
        verdict = f"{type(exc).__name__}: {exc}"
    if verdict is None or verdict is True:
        return []
    message = verdict if isinstance(verdict, str) else "custom validation rejected the inputs"
    # as ComfyUI reports it: once for each input the validator takes (all of them when it takes **kwargs)
    names = [name for name in literals if name in node_def.custom_validated] or list(literals)
    if not names:
        return [problem("custom_validation_failed", "Custom validation failed for node", message)]
    return [problem("custom_validation_failed", "Custom validation failed for node", f"{name} - {message}",
                    input_name=name) for name in names]


# ---- the whole workflow -----------------------------------------------------------------------------------


def validate(workflow: Workflow, registry: Registry, dirs: Dirs | None = None) -> ValidationReport:
    report = ValidationReport()
    errors: dict[str, list[dict[str, Any]]] = {}
    links = {node_id: node.links() for node_id, node in workflow.nodes.items()}
    defs = {node_id: registry.get(node.class_type) for node_id, node in workflow.nodes.items()}
    missing = []
    for node_id, prompt_node in workflow.nodes.items():
        node_def = defs[node_id]
        if node_def is None:
            missing.append(node_id)
            errors[node_id] = [problem("missing_node_type", f"Node type {prompt_node.class_type!r} does not exist",
                                       f"node {node_id}: unknown class_type {prompt_node.class_type!r}",
                                       class_type=prompt_node.class_type)]
            continue
        prepared, node_errors = _check_node(defs, workflow, node_id, node_def, links[node_id], dirs)
        report.prepared[node_id] = prepared
        if node_errors:
            errors[node_id] = node_errors
    order, cyclic = _order(workflow, links)
    for node_id in cyclic:
        errors.setdefault(node_id, []).append(problem(
            "dependency_cycle", "Dependency cycle detected", f"node {node_id} depends on its own output"))
    report.order = order
    outputs = [nid for nid, prep in report.prepared.items() if prep.node.spec.output_node]
    bad = _tainted(links, order, cyclic, set(errors))
    report.outputs = [nid for nid in outputs if nid not in bad]
    report.node_errors = _node_errors(workflow, links, errors, outputs, bad)
    report.error = _top_level_error(workflow, missing, outputs, report.outputs, cyclic)
    return report


Links = dict[str, dict[str, Link]]


def _order(workflow: Workflow, links: Links) -> tuple[list[str], set[str]]:
    """Topological order of the whole workflow, and the nodes that sit on a cycle.

    The common, acyclic case is a plain Kahn sort over the links we already hold (several times faster
    than building a networkx graph); networkx diagnoses cycles, which is rare and needs its SCC algorithm.
    """
    order = _kahn(links)
    if len(order) == len(links):
        return order, set()
    graph = nx.DiGraph()
    graph.add_nodes_from(links)
    graph.add_edges_from((src, dst) for dst, node_links in links.items() for src, _ in node_links.values()
                         if src in links)
    cyclic = {n for comp in nx.strongly_connected_components(graph) if len(comp) > 1 for n in comp}
    cyclic |= {n for n in graph.nodes if graph.has_edge(n, n)}
    return [n for n in nx.topological_sort(graph.subgraph(n for n in graph if n not in cyclic))], cyclic


def _kahn(links: Links) -> list[str]:
    """Nodes in dependency order (sources first, ties in workflow order); nodes on or after a cycle are left out."""
    waiting = {}
    dependents: dict[str, list[str]] = {}
    for node_id, node_links in links.items():
        sources = {src for src, _ in node_links.values() if src in links}
        waiting[node_id] = len(sources)
        for src in sources:
            dependents.setdefault(src, []).append(node_id)
    ready = [node_id for node_id, count in waiting.items() if count == 0]
    ready.reverse()
    order = []
    while ready:
        node_id = ready.pop()
        order.append(node_id)
        for dependent in dependents.get(node_id, ()):
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                ready.append(dependent)
    return order


def _tainted(links: Links, order: list[str], cyclic: set[str], erroring: set[str]) -> set[str]:
    """Nodes that have an error or depend on one (directly or through ancestors)."""
    bad = set(erroring) | cyclic
    if not bad:
        return bad
    for node_id in order:  # topological order: every source is decided before its dependents
        if node_id not in bad and any(source in bad for source, _ in links[node_id].values()):
            bad.add(node_id)
    return bad


def _ancestors(links: Links, start: str) -> set[str]:
    seen, stack = {start}, [start]
    while stack:
        for source, _ in links[stack.pop()].values():
            if source in links and source not in seen:
                seen.add(source)
                stack.append(source)
    return seen


def _node_errors(workflow: Workflow, links: Links, errors: dict[str, list[dict[str, Any]]], outputs: list[str],
                 bad: set[str]) -> dict[str, dict[str, Any]]:
    dependents: dict[str, list[str]] = {node_id: [] for node_id in errors}
    for output in outputs:
        if output in bad:
            for node_id in _ancestors(links, output) & errors.keys():
                dependents[node_id].append(output)
    return {
        node_id: {"errors": errs, "dependent_outputs": dependents[node_id],
                  "class_type": workflow.nodes[node_id].class_type}
        for node_id, errs in errors.items()
    }


def _top_level_error(workflow: Workflow, missing: list[str], outputs: list[str], good: list[str],
                     cyclic: set[str]) -> dict[str, Any] | None:
    if missing:
        names = sorted({workflow.nodes[n].class_type for n in missing})
        return problem("missing_node_type", f"Cannot run: unknown node type(s) {', '.join(names)}",
                       f"nodes {', '.join(missing)}", node_ids=missing)
    if not outputs:
        return problem("prompt_no_outputs", "Prompt has no outputs",
                       "the workflow needs at least one output node (SaveImage, PreviewImage, ...)")
    if not good:
        kind = "dependency_cycle" if cyclic and not (set(outputs) - cyclic) else "prompt_outputs_failed_validation"
        return problem(kind, "Prompt outputs failed validation",
                       "no output node has a valid set of inputs and ancestors")
    return None
