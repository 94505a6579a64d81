"""Get a prompt ready to run: parse it, validate it against the registry, and plan what runs.

`prepare` never raises for bad input: a malformed or invalid prompt comes back with `ok` false and the problems
in the ecosystem's shape (`error`, `node_errors`), so every face reports them the same way.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sdgraph.collector import drain
from sdgraph.paths import Dirs
from sdgraph.registry import Registry
from sdgraph.validate import PreparedNode, ValidationReport, problem, validate
from sdgraph.workflow import Workflow, WorkflowFormatError, parse_workflow

log = logging.getLogger("sdgraph")


@dataclass
class PreparedPrompt:
    """A prompt after preparation: its workflow (None if it did not parse), the verdict, and the plan."""

    workflow: Workflow | None
    report: ValidationReport
    plan: list[str] = field(default_factory=list)  # the nodes that run, in order; empty unless ok

    @property
    def ok(self) -> bool:
        return self.report.ok

    @property
    def error(self) -> dict[str, Any] | None:
        return self.report.error

    @property
    def node_errors(self) -> dict[str, dict[str, Any]]:
        return self.report.node_errors

    @property
    def outputs(self) -> list[str]:
        return self.report.outputs

    @property
    def nodes(self) -> dict[str, PreparedNode]:
        return self.report.prepared

    def as_dict(self) -> dict[str, Any]:
        return self.report.as_dict()

    def release(self) -> None:
        """Free the nodes one at a time (see `collector.drain`); the prompt is empty afterwards."""
        drain(self.report.prepared, self.workflow.nodes if self.workflow is not None else None)
        self.plan = []


def prepare(source: Workflow | Any, registry: Registry, dirs: Dirs | None = None) -> PreparedPrompt:
    """Parse (unless given a Workflow), validate and plan."""
    try:
        workflow = source if isinstance(source, Workflow) else parse_workflow(source)
    except WorkflowFormatError as exc:
        return refused(str(exc))
    except RecursionError:
        return refused("the workflow is nested too deeply")
    try:
        report = validate(workflow, registry, dirs)
    except RecursionError:
        return refused("the workflow is nested too deeply", workflow)
    except Exception as exc:  # noqa: BLE001 - a node's own check failed: the prompt is refused, not the caller
        log.exception("validation raised")
        return refused(f"validation failed: {type(exc).__name__}: {exc}", workflow)
    return PreparedPrompt(workflow, report, needed_nodes(report) if report.ok else [])


def refused(message: str, workflow: Workflow | None = None) -> PreparedPrompt:
    """A prompt that cannot be prepared at all (not even per node)."""
    return PreparedPrompt(workflow, ValidationReport(error=problem("invalid_prompt", message)))


def needed_nodes(report: ValidationReport) -> list[str]:
    """The ancestors of the valid output nodes (and the outputs), in topological order."""
    needed = set(report.outputs)
    prepared = report.prepared
    for node_id in reversed(report.order):
        if node_id in needed:
            needed.update(src for src, _ in prepared[node_id].links.values())
    return [node_id for node_id in report.order if node_id in needed]
