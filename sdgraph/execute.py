"""Run a prepared prompt: only what the output nodes need, in topological order, reusing cached outputs.

Events go to a listener as `(type, data)` with the ecosystem's WebSocket message names and payloads:
execution_start, execution_cached, executing, progress, executed, execution_success, execution_error,
execution_interrupted, and `preview` (a latent preview image, for faces that can show one).
"""
from __future__ import annotations

import gc
import hashlib
import json
import logging
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from sdgraph.cache import CachedOutput, OutputCache
from sdgraph.collector import collector_paused, collector_resumed
from sdgraph.context import Interrupted, InterruptFlag, NodeContext, Services
from sdgraph.node import NodeOutput
from sdgraph.prepare import PreparedPrompt, prepare
from sdgraph.registry import Registry
from sdgraph.signature import node_signature
from sdgraph.validate import PreparedNode
from sdgraph.workflow import Workflow

log = logging.getLogger("sdgraph")

Listener = Callable[[str, dict[str, Any]], None]
Recorder = Callable[["RunResult"], None]

# The events a run's history keeps, as `[event, data]` pairs (the ecosystem's `status.messages`).
REFREEZE_EVERY = 1024  # nodes between moves of what the run holds out of the collector's sight

HISTORY_EVENTS = frozenset({"execution_start", "execution_cached", "execution_success", "execution_error",
                            "execution_interrupted"})


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
    node_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[list[Any]] = field(default_factory=list)  # the HISTORY_EVENTS this run emitted
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"


class Executor:
    """Prepares and runs prompts against a registry; keeps the output cache and services across runs.

    The prompt lifecycle is the engine's: `prepare` (parse, validate, plan; no side effects, safe in any thread),
    then `execute`, which runs one prepared prompt at a time, hands the outcome to the caller's `record` (a
    history, say) and only then announces the end with `executing: null`.
    """

    def __init__(self, registry: Registry, services: Services | None = None, cache: OutputCache | None = None):
        self.registry = registry
        self.services = services or Services()
        self.cache = cache if cache is not None else OutputCache()
        self.interrupt_flag = InterruptFlag()
        self._lock = threading.Lock()

    def interrupt(self) -> None:
        """Stop the run in progress at its next check (or, if none is running, the next run to start)."""
        self.interrupt_flag.set()

    def prepare(self, source: Workflow | Any) -> PreparedPrompt:
        with collector_paused():
            return prepare(source, self.registry, self.services.dirs)

    def run(self, source: Workflow | Any, **options: Any) -> RunResult:
        """Prepare and execute in one call (see `execute` for the options)."""
        return self.execute(self.prepare(source), **options)

    def execute(self, prompt: PreparedPrompt, *, prompt_id: str | None = None, listener: Listener | None = None,
                extra_data: dict[str, Any] | None = None, record: Recorder | None = None) -> RunResult:
        """Run a prepared prompt. Never raises for the prompt's failure, nor for the recorder's: see RunResult.

        An invalid prompt ends with `execution_error` carrying its node errors. If `record` raises, the run ends
        as an error (and `record` is given that error result once more), so no prompt is left unfinished.
        """
        prompt_id = prompt_id or str(uuid.uuid4())
        start = time.perf_counter()
        with self._lock:
            emit = _HistoryListener(listener or _ignore)
            try:
                result = self._outcome(prompt, prompt_id, emit, _extra_data(prompt, extra_data))
            finally:
                self.interrupt_flag.clear()  # at the end, not the start: an interrupt sent just before counts
            result.messages = emit.messages
            result.seconds = time.perf_counter() - start
            if record is not None:
                result = _recorded(result, record, emit)
            # As in the ecosystem's protocol, "executing" with no node closes every run, whatever its outcome.
            emit("executing", {"node": None, "display_node": None, "prompt_id": prompt_id})
        return result

    def _outcome(self, prompt: PreparedPrompt, prompt_id: str, emit: Listener,
                 extra_data: dict[str, Any]) -> RunResult:
        if not prompt.ok or prompt.workflow is None:
            result = RunResult(prompt_id, "invalid", node_errors=prompt.node_errors)
            result.error = error_payload(prompt_id, message=_invalid_message(prompt.error),
                                         exception_type=str((prompt.error or {}).get("type", "invalid_prompt")),
                                         node_errors=prompt.node_errors)
            emit("execution_error", result.error)
            return result
        try:
            with collector_paused(), self.services.prompt_scope():
                return _Run(self, prompt, prompt_id, emit, extra_data).execute()
        except Exception as exc:  # noqa: BLE001 - an engine bug becomes this prompt's error, not the caller's
            log.error("engine failure in prompt %s", prompt_id, exc_info=exc)
            result = RunResult(prompt_id, "error", error=error_payload(prompt_id, exc))
            emit("execution_error", result.error)
            return result


class _HistoryListener:
    """Passes every event on, keeping those the history records."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.messages: list[list[Any]] = []

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event in HISTORY_EVENTS:
            self.messages.append([event, data])
        self.listener(event, data)


def _recorded(result: RunResult, record: Recorder, emit: Listener) -> RunResult:
    """Record the result; a failure to record turns it into an error result, recorded in its place."""
    try:
        record(result)
        return result
    except Exception as exc:  # noqa: BLE001 - a full disk or an unserialisable value must not leave a zombie
        log.error("could not record prompt %s", result.prompt_id, exc_info=exc)
        failed = RunResult(result.prompt_id, "error", executed=result.executed, cached=result.cached,
                           seconds=result.seconds, messages=result.messages)
        failed.error = error_payload(result.prompt_id, exc, executed=result.executed,
                                     message=f"the prompt ran, but its result could not be recorded: "
                                             f"{type(exc).__name__}: {exc}")
        emit("execution_error", failed.error)
    try:
        record(failed)
    except Exception:  # noqa: BLE001 - nothing more to be done; the recorder has released the prompt
        log.exception("could not record the failure of prompt %s either", result.prompt_id)
    return failed


def _extra_data(prompt: PreparedPrompt, extra_data: dict[str, Any] | None) -> dict[str, Any]:
    """The run's extra data; a workflow file's editor layout travels as `extra_pnginfo` unless one is given."""
    extra = dict(extra_data or {})
    layout = prompt.workflow.layout if prompt.workflow is not None else None
    if layout and "extra_pnginfo" not in extra:
        extra["extra_pnginfo"] = {"workflow": layout}
    return extra


def _invalid_message(error: dict[str, Any] | None) -> str:
    error = error or {}
    return f"{error.get('message', 'invalid prompt')}: {error.get('details', '')}".rstrip(": ")


def error_payload(prompt_id: str, exc: BaseException | None = None, *, node_id: str | None = None,
                  node_type: str | None = None, executed: list[str] | None = None, message: str | None = None,
                  exception_type: str | None = None, current_inputs: dict[str, Any] | None = None,
                  current_outputs: list[str] | None = None,
                  node_errors: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one builder of `execution_error` payloads (the ecosystem's fields), for every way a run can fail."""
    payload = {
        "prompt_id": prompt_id,
        "node_id": node_id,
        "node_type": node_type,
        "executed": list(executed or []),
        "exception_message": message if message is not None else str(exc),
        "exception_type": exception_type or (_qualified_name(type(exc)) if exc is not None else "error"),
        "traceback": traceback.format_exception(type(exc), exc, exc.__traceback__) if exc is not None else [],
        "current_inputs": current_inputs or {},
        "current_outputs": list(current_outputs or []),
        "timestamp": _now_ms(),
    }
    if node_errors:
        payload["node_errors"] = node_errors
    return payload


def _qualified_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}".removeprefix("builtins.")


class _Run:
    """The state of one prompt's execution."""

    def __init__(self, executor: Executor, prompt: PreparedPrompt, prompt_id: str, emit: Listener,
                 extra_data: dict[str, Any]) -> None:
        self.executor = executor
        self.prompt = prompt
        self.workflow = prompt.workflow
        self.nodes = prompt.nodes
        self.prompt_id = prompt_id
        self.emit = emit
        self.extra_data = extra_data
        self.values: dict[str, tuple[list[Any], ...]] = {}
        self.result = RunResult(prompt_id, "success")
        self.api_prompt: dict[str, Any] | None = None
        self._digests: dict[str, str] = {}

    def execute(self) -> RunResult:
        self.emit("execution_start", {"prompt_id": self.prompt_id, "timestamp": _now_ms()})
        try:
            plan = self.prompt.plan
            keys = self._signatures(plan)
            cached = [node_id for node_id in plan if keys[node_id] in self.executor.cache]
            self.result.cached = cached
            self.emit("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id, "timestamp": _now_ms()})
            with _engine_state_frozen():
                for index, node_id in enumerate(plan, 1):
                    self._step(node_id, keys[node_id])
                    if index % REFREEZE_EVERY == 0:
                        gc.freeze()  # the outputs kept so far too, or each full collection walks them all again
        except Interrupted:
            self._interrupted()
        except NodeError as exc:
            self._failed(exc)
        else:
            self.emit("execution_success", {"prompt_id": self.prompt_id, "timestamp": _now_ms()})
        return self.result

    def _signatures(self, plan: list[str]) -> dict[str, str]:
        keys: dict[str, str] = {}
        dirs = self.executor.services.dirs
        for node_id in plan:
            node = self.nodes[node_id]
            fingerprint = None
            if node.node.fingerprint is not None:
                try:
                    fingerprint = node.node.fingerprint(node.literals, dirs)
                except Exception as exc:
                    raise NodeError(node_id, node.node.class_type, exc) from exc
            hidden = self._hidden_key(node) if node.node.spec.has_hidden else None
            keys[node_id] = node_signature(node, fingerprint, keys, hidden)
        return keys

    def _hidden_key(self, node: PreparedNode) -> dict[str, str]:
        """What stands for the node's hidden inputs in its cache key: the values it receives, or their digests.

        The node id (UNIQUE_ID) is used as it is. The prompt and the PNG info are hashed once per run: a node that
        reads them (to embed them in a file, say) runs again when they change, even if its other inputs did not.
        """
        key = {}
        for spec in node.node.spec.inputs:
            if spec.section != "hidden":
                continue
            if spec.hidden_kind == "UNIQUE_ID":
                key[spec.name] = node.node_id
            else:
                kind = spec.hidden_kind or spec.type
                if kind not in self._digests:
                    self._digests[kind] = value_digest(hidden_value(kind, self._context(node)))
                key[spec.name] = self._digests[kind]
        return key

    def _step(self, node_id: str, key: str) -> None:
        self.executor.interrupt_flag.check()
        node = self.nodes[node_id]
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

    def _context(self, node: PreparedNode) -> NodeContext:
        node_id = node.node_id
        return NodeContext(node_id, self.prompt_id, self.executor.services, self.executor.interrupt_flag,
                           extra_data=self.extra_data, prompt_source=self._api_prompt,
                           on_progress=lambda value, total, preview: self._progress(node_id, value, total, preview))

    def _call(self, node: PreparedNode) -> tuple[tuple[list[Any], ...], dict[str, Any] | None]:
        inputs = {name: self.values[src][index] for name, (src, index) in node.links.items()}
        try:
            with collector_resumed():
                return call_node(node, inputs, self._context(node))
        except Interrupted:
            raise
        except Exception as exc:
            raise NodeError(node.node_id, node.node.spec.class_type, exc) from exc

    def _api_prompt(self) -> dict[str, Any]:
        if self.api_prompt is None:
            self.api_prompt = self.workflow.to_api()
        return self.api_prompt

    def _progress(self, node_id: str, value: int, total: int, preview: Any) -> None:
        self.emit("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id})
        if preview is not None:
            self.emit("preview", {"node": node_id, "prompt_id": self.prompt_id, "image": preview})

    def _failed(self, exc: NodeError) -> None:
        self.result.status = "error"
        self.result.error = error_payload(
            self.prompt_id, exc.cause, node_id=exc.node_id, node_type=exc.class_type,
            executed=self.result.executed, current_inputs=_preview_inputs(self.nodes.get(exc.node_id)),
            current_outputs=sorted(self.values))
        self.emit("execution_error", self.result.error)

    def _interrupted(self) -> None:
        current = next((n for n in self.prompt.plan if n not in self.values), None)
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
def _engine_state_frozen() -> Iterator[None]:
    """While nodes run, the collector skips the objects that existed before (the workflow, the plan, the cache)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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
    return {spec.name: hidden_value(spec.hidden_kind or spec.type, ctx)
            for spec in node.node.spec.inputs if spec.section == "hidden"}


# Hidden inputs that come from the prompt's extra data (credentials for API nodes), by kind.
_FROM_EXTRA_DATA = {"EXTRA_PNGINFO": "extra_pnginfo", "AUTH_TOKEN_COMFY_ORG": "auth_token_comfy_org",
                    "API_KEY_COMFY_ORG": "api_key_comfy_org"}


def hidden_value(kind: str, ctx: NodeContext) -> Any:
    """The value a hidden input of this kind receives."""
    if kind == "UNIQUE_ID":
        return ctx.node_id
    if kind == "PROMPT":
        return ctx.prompt
    if kind in _FROM_EXTRA_DATA:
        return ctx.extra_data.get(_FROM_EXTRA_DATA[kind])
    return None


def value_digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def normalise_result(node: PreparedNode, raw: Any) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """Accept a tuple of values, a NodeOutput, or the ecosystem's `{"ui": ..., "result": ...}` dict."""
    ui = None
    if isinstance(raw, NodeOutput):
        raw, ui = raw.values, raw.ui
    elif isinstance(raw, dict):  # `{}` too: an output node with nothing to show
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
