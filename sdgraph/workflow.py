"""Workflow JSON in the ecosystem's API format, and the editor layout that travels beside it.

    {"<id>": {"class_type": "KSampler", "inputs": {"seed": 5, "model": ["4", 0]}, "_meta": {"title": "..."}}}

An input is a literal or a link `[source_id, output_index]`; a literal list is wrapped as `{"__value__": [...]}`.
A file may hold the API format alone, or `{"prompt": <api format>, "workflow": <editor graph>}`; the editor part
(positions, sizes, groups) never changes what runs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError

Link = tuple[str, int]


class WorkflowFormatError(ValueError):
    """The JSON is not an API-format workflow; the message says where."""


def is_link(value: Any) -> bool:
    """`[source_id, output_index]`: a two-item list (or tuple) of a str/int id and an int index."""
    return (
        type(value) in (list, tuple)
        and len(value) == 2
        and type(value[1]) is int
        and type(value[0]) in (str, int)
    )


def is_wrapped_literal(value: Any) -> bool:
    """`{"__value__": v}`: a value given on purpose (a list would otherwise read as a link)."""
    return isinstance(value, dict) and len(value) == 1 and "__value__" in value


def unwrap_literal(value: Any) -> Any:
    return value["__value__"] if is_wrapped_literal(value) else value


class PromptNode(BaseModel):
    """One node of an API-format workflow."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    class_type: str = Field(min_length=1)
    inputs: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict, alias="_meta")

    @property
    def title(self) -> str | None:
        title = self.meta.get("title")
        return title if isinstance(title, str) else None

    def links(self) -> dict[str, Link]:
        found = {}
        for name, v in self.inputs.items():
            if is_link(v):
                found[name] = (v[0] if type(v[0]) is str else str(v[0]), v[1])
        return found

    def literals(self) -> dict[str, Any]:
        return {name: unwrap_literal(v) for name, v in self.inputs.items() if not is_link(v)}

    def to_api(self) -> dict[str, Any]:
        """The node as the API format writes it; `_meta` only if it was given or holds something, so a prompt
        embedded in a saved file is the prompt as submitted."""
        data = self.model_dump(by_alias=True, exclude_defaults=False)
        if not self.meta and "meta" not in self.model_fields_set:
            del data["_meta"]
        return data


class ApiWorkflow(RootModel[dict[str, PromptNode]]):
    """The API format as a JSON Schema-exportable model."""


class Workflow:
    """A parsed workflow: nodes by id, plus whatever editor layout came with it."""

    __slots__ = ("nodes", "layout", "origin")

    def __init__(self, nodes: dict[str, PromptNode], layout: dict[str, Any] | None = None,
                 origin: dict[str, dict[str, Any]] | None = None) -> None:
        self.nodes = nodes
        self.layout = layout
        self.origin = origin  # converted from a UI file: API id -> {ui_id, title, path} the user sees there

    def to_api(self) -> dict[str, Any]:
        return {node_id: node.to_api() for node_id, node in self.nodes.items()}

    def to_file(self) -> dict[str, Any]:
        if self.layout is None:
            return self.to_api()
        return {"prompt": self.to_api(), "workflow": self.layout}



def parse_workflow(data: Any) -> Workflow:
    """Read the API format, or the `{"prompt", "workflow"}` envelope, into a Workflow."""
    layout = None
    if isinstance(data, dict) and "prompt" in data and isinstance(data["prompt"], dict) and _looks_enveloped(data):
        layout = data.get("workflow")
        data = data["prompt"]
    if not isinstance(data, dict):
        raise WorkflowFormatError(f"a workflow must be a JSON object of nodes by id, got {type(data).__name__}")
    nodes: dict[str, PromptNode] = {}
    problems: list[str] = []
    for node_id, node in data.items():  # node by node: one call over a huge workflow would hold the GIL long
        try:
            nodes[str(node_id)] = PromptNode.model_validate(node)
        except ValidationError as exc:
            problems.extend(_describe(exc, str(node_id)))
    if problems:
        raise WorkflowFormatError("invalid workflow JSON: " + "; ".join(problems))
    return Workflow(nodes, layout)


def _looks_enveloped(data: dict[str, Any]) -> bool:
    return "class_type" not in data["prompt"] and set(data) <= {"prompt", "workflow", "extra_data", "client_id"}


def _describe(exc: ValidationError, node_id: str) -> list[str]:
    lines = []
    for err in exc.errors():
        where = f"node {node_id!r}"
        if err["loc"]:
            where += " field " + ".".join(str(p) for p in err["loc"])
        lines.append(f"{where}: {err['msg']}")
    return lines


def load_workflow(path: str | Path, registry: Any = None) -> Workflow:
    """A workflow file in any form users have: API JSON, UI JSON (converted), or a picture carrying either."""
    from sdgraph.uiformat import load_any  # the converter builds on this module

    return load_any(Path(path), registry)


def json_schema() -> dict[str, Any]:
    schema = ApiWorkflow.model_json_schema()
    schema["title"] = "sdgraph API-format workflow"
    schema["description"] = (
        "Nodes by id. An input is a literal, a link [source_id, output_index], or {'__value__': [...]} for a list."
    )
    return schema
