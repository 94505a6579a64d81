"""Run a validated workflow: only what the output nodes need, in topological order, reusing cached outputs.

Events go to a listener as `(type, data)` with the ecosystem's WebSocket message names and payloads:
execution_start, execution_cached, executing, progress, executed, execution_success, execution_error,
execution_interrupted, and `preview` (a latent preview image, for faces that can show one).
"""
from __future__ import annotations

import gc
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from sdgraph.cache import CachedOutput, OutputCache
from sdgraph.context import Interrupted, InterruptFlag, NodeContext, Services
from sdgraph.node import NodeOutput
from sdgraph.registry import Registry
from sdgraph.signature import node_signature
from sdgraph.validate import PreparedNode, ValidationReport, validate
from sdgraph.workflow import Workflow, parse_workflow

Listener = Callable[[str, dict[str, Any]], None]


def _ignore(event: str, data: dict[str, Any]) -> None:
    pass


class NodeError(Exception):
    """A node's own failure, carrying which node it was."""

    def __init__(self, node_id: str, class_type: str, cause: BaseException) -> None:
        super().__init__(f"node {node_id} ({class_type}): {type(cause).__name__}: {cause}")
        self.node_id = node_id
        self.class_type = class_type
        self.cause = cause


@dataclass
class RunResult:
    prompt_id: str
    status: str  # "success", "error", "interrupted" or "invalid"
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    validation: ValidationReport | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"


class Executor:
    """Runs workflows against a registry; keeps the output cache and services across runs. One run at a time."""

    def __init__(self, registry: Registry, services: Services | None = None, cache: OutputCache | None = None):
        self.registry = registry
        self.services = services or Services()
        self.cache = cache if cache is not None else OutputCache()
        self.interrupt_flag = InterruptFlag()
        self._lock = threading.Lock()

    def interrupt(self) -> None:
        self.interrupt_flag.set()

    def validate(self, workflow: Workflow | dict[str, Any]) -> ValidationReport:
        if not isinstance(workflow, Workflow):
            workflow = parse_workflow(workflow)
        return validate(workflow, self.registry, self.services.dirs)

    def run(self, workflow: Workflow | dict[str, Any], *, prompt_id: str | None = None,
            listener: Listener | None = None, extra_data: dict[str, Any] | None = None,
            report: ValidationReport | None = None) -> RunResult:
        """Validate (unless a report is given) and run. Never raises for a node's failure: see RunResult."""
        with _engine_work():
            if not isinstance(workflow, Workflow):
                workflow = parse_workflow(workflow)
            prompt_id = prompt_id or str(uuid.uuid4())
            report = report or validate(workflow, self.registry, self.services.dirs)
            if not report.ok:
                return RunResult(prompt_id, "invalid", error=report.error, validation=report)
            with self._lock:
                self.interrupt_flag.clear()
                run = _Run(self, workflow, report, prompt_id, listener or _ignore, extra_data or {})
                return run.execute()


class _Run:
    """The state of one prompt's execution."""

    def __init__(self, executor: Executor, workflow: Workflow, report: ValidationReport, prompt_id: str,
                 emit: Listener, extra_data: dict[str, Any]) -> None:
        self.executor = executor
        self.workflow = workflow
        self.report = report
        self.prompt_id = prompt_id
        self.emit = emit
        self.extra_data = extra_data
        self.values: dict[str, tuple[list[Any], ...]] = {}
        self.result = RunResult(prompt_id, "success", validation=report)
        self.api_prompt: dict[str, Any] | None = None

    def execute(self) -> RunResult:
        start = time.perf_counter()
        self.emit("execution_start", {"prompt_id": self.prompt_id, "timestamp": _now_ms()})
        try:
            plan = needed_nodes(self.report)
            keys = self._signatures(plan)
            cached = [node_id for node_id in plan if keys[node_id] in self.executor.cache]
            self.result.cached = cached
            self.emit("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id, "timestamp": _now_ms()})
            with _engine_state_frozen():
                for node_id in plan:
                    self._step(node_id, keys[node_id])
        except Interrupted:
            self._interrupted()
        except NodeError as exc:
            self._failed(exc)
        else:
            self.emit("execution_success", {"prompt_id": self.prompt_id, "timestamp": _now_ms()})
        # As in the ecosystem's protocol, "executing" with no node closes every run, whatever its outcome.
        self.emit("executing", {"node": None, "display_node": None, "prompt_id": self.prompt_id})
        self.result.seconds = time.perf_counter() - start
        return self.result

    def _signatures(self, plan: list[str]) -> dict[str, str]:
        keys: dict[str, str] = {}
        prepared = self.report.prepared
        dirs = self.executor.services.dirs
        for node_id in plan:
            node = prepared[node_id]
            fingerprint = None
            if node.node.fingerprint is not None:
                try:
                    fingerprint = node.node.fingerprint(node.literals, dirs)
                except Exception as exc:
                    raise NodeError(node_id, node.node.class_type, exc) from exc
            keys[node_id] = node_signature(node, fingerprint, keys)
        return keys

    def _step(self, node_id: str, key: str) -> None:
        self.executor.interrupt_flag.check()
        node = self.report.prepared[node_id]
        hit = self.executor.cache.get(key, node_id)
        if hit is not None:
            self.values[node_id] = hit.values
            if hit.ui:
                self._executed(node_id, hit.ui)
            return
        self.emit("executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id})
        values, ui = self._call(node)
        self.values[node_id] = values
        self.executor.cache.put(key, CachedOutput(values, ui), node_id)
        self.result.executed.append(node_id)
        if ui:
            self._executed(node_id, ui)

    def _executed(self, node_id: str, ui: dict[str, Any]) -> None:
        self.result.outputs[node_id] = ui
        self.emit("executed", {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.prompt_id})

    def _call(self, node: PreparedNode) -> tuple[tuple[list[Any], ...], dict[str, Any] | None]:
        spec = node.node.spec
        ctx = NodeContext(node.node_id, self.prompt_id, self.executor.services, self.executor.interrupt_flag,
                          extra_data=self.extra_data, prompt_source=self._api_prompt,
                          on_progress=lambda value, total, preview: self._progress(node.node_id, value, total,
                                                                                     preview))
        inputs = {name: self.values[src][index] for name, (src, index) in node.links.items()}
        try:
            with _node_work():
                return call_node(node, inputs, ctx)
        except Interrupted:
            raise
        except Exception as exc:
            raise NodeError(node.node_id, spec.class_type, exc) from exc

    def _api_prompt(self) -> dict[str, Any]:
        if self.api_prompt is None:
            self.api_prompt = self.workflow.to_api()
        return self.api_prompt

    def _progress(self, node_id: str, value: int, total: int, preview: Any) -> None:
        self.emit("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id})
        if preview is not None:
            self.emit("preview", {"node": node_id, "prompt_id": self.prompt_id, "image": preview})

    def _failed(self, exc: NodeError) -> None:
        cause = exc.cause
        self.result.status = "error"
        self.result.error = {
            "prompt_id": self.prompt_id,
            "node_id": exc.node_id,
            "node_type": exc.class_type,
            "executed": list(self.result.executed),
            "exception_message": str(cause),
            "exception_type": f"{type(cause).__module__}.{type(cause).__qualname__}".removeprefix("builtins."),
            "traceback": traceback.format_exception(type(cause), cause, cause.__traceback__),
            "current_inputs": _preview_inputs(self.report.prepared.get(exc.node_id)),
            "current_outputs": sorted(self.values),
            "timestamp": _now_ms(),
        }
        self.emit("execution_error", self.result.error)

    def _interrupted(self) -> None:
        current = next((n for n in needed_nodes(self.report) if n not in self.values), None)
        self.result.status = "interrupted"
        self.result.error = {
            "prompt_id": self.prompt_id,
            "node_id": current,
            "node_type": self.workflow.nodes[current].class_type if current else None,
            "executed": list(self.result.executed),
            "timestamp": _now_ms(),
        }
        self.emit("execution_interrupted", self.result.error)


@contextmanager
def _engine_work() -> Iterator[None]:
    """Pause the cyclic garbage collector while the engine does its bookkeeping.

    Validation, planning and signatures allocate many small, acyclic objects; on a 10k-node graph the collector's
    repeated passes over them doubled the engine's cost. Nodes run with the collector as it was (`_node_work`).
    """
    enabled = gc.isenabled()
    gc.disable()
    _GC_STATE.enabled = enabled
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def _engine_state_frozen() -> Iterator[None]:
    """While nodes run, the collector skips the objects that existed before (the workflow, the plan, the cache)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def _node_work() -> Iterator[None]:
    if getattr(_GC_STATE, "enabled", False):
        gc.enable()
        try:
            yield
        finally:
            gc.disable()
    else:
        yield


_GC_STATE = threading.local()


def needed_nodes(report: ValidationReport) -> list[str]:
    """The ancestors of the valid output nodes (and the outputs), in topological order."""
    needed = set(report.outputs)
    prepared = report.prepared
    for node_id in reversed(report.order):
        if node_id in needed:
            needed.update(src for src, _ in prepared[node_id].links.values())
    return [node_id for node_id in report.order if node_id in needed]


def call_node(node: PreparedNode, inputs: dict[str, list[Any]], ctx: NodeContext
              ) -> tuple[tuple[list[Any], ...], dict[str, Any] | None]:
    """Call a node with the list semantics of the ecosystem.

    Every output slot holds a list. A node that does not take lists runs once per item of its longest list
    input (shorter lists repeat their last item); a list output extends the slot, any other output appends.
    """
    spec = node.node.spec
    args = dict(node.literals)
    if spec.has_hidden:
        args.update(_hidden_inputs(node, ctx))
    if spec.input_is_list:
        args = {name: [value] for name, value in args.items()}
        args.update(inputs)
        batches = [args]
    elif all(len(values) == 1 for values in inputs.values()):  # the common case: one call
        args.update((name, values[0]) for name, values in inputs.items())
        batches = [args]
    else:
        count = max((len(values) for values in inputs.values()), default=1)
        if any(not values for values in inputs.values()):
            count = 0
        batches = [
            {**args, **{name: values[min(i, len(values) - 1)] for name, values in inputs.items()}}
            for i in range(count)
        ]
    slots: tuple[list[Any], ...] = tuple([] for _ in spec.outputs)
    ui: dict[str, Any] | None = None
    for batch in batches:
        values, batch_ui = normalise_result(node, node.node.invoke(batch, ctx))
        for slot, out_spec, value in zip(slots, spec.outputs, values):
            if out_spec.is_list:
                slot.extend(value)
            else:
                slot.append(value)
        if batch_ui:
            ui = _merge_ui(ui, batch_ui)
    return slots, ui


def _hidden_inputs(node: PreparedNode, ctx: NodeContext) -> dict[str, Any]:
    hidden = {}
    for spec in node.node.spec.inputs:
        if spec.section != "hidden":
            continue
        kind = spec.hidden_kind
        if kind == "PROMPT":
            hidden[spec.name] = ctx.prompt
        elif kind == "EXTRA_PNGINFO":
            hidden[spec.name] = ctx.extra_data.get("extra_pnginfo")
        elif kind == "UNIQUE_ID":
            hidden[spec.name] = ctx.node_id
        else:
            hidden[spec.name] = None
    return hidden


def normalise_result(node: PreparedNode, raw: Any) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """Accept a tuple of values, a NodeOutput, or the ecosystem's `{"ui": ..., "result": ...}` dict."""
    ui = None
    if isinstance(raw, NodeOutput):
        raw, ui = raw.values, raw.ui
    elif isinstance(raw, dict) and ("ui" in raw or "result" in raw):
        ui = raw.get("ui")
        raw = raw.get("result", ())
    if raw is None:
        raw = ()
    if not isinstance(raw, (tuple, list)):
        raise TypeError(f"node {node.node_id} returned {type(raw).__name__}; expected a tuple of its outputs")
    expected = len(node.node.spec.outputs)
    if len(raw) != expected:
        raise TypeError(f"node {node.node_id} returned {len(raw)} value(s) but declares {expected} output(s)")
    return tuple(raw), ui


def _merge_ui(into: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    if into is None:
        return dict(more)
    for key, value in more.items():
        if isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + value
        else:
            into[key] = value
    return into


def _preview_inputs(node: PreparedNode | None) -> dict[str, Any]:
    if node is None:
        return {}
    return {name: repr(value)[:200] for name, value in node.literals.items()}


def _now_ms() -> int:
    return int(time.time() * 1000)
