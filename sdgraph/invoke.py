"""Calling a node with the ecosystem's list semantics, blockers, async functions and expansion results.

Every output slot holds a list. A node that does not take lists runs once per item of its longest list input
(shorter lists repeat their last item); a list output extends the slot, any other output appends. A call whose
inputs hold an `ExecutionBlocker` is not made: each of its outputs is the blocker. An `async def` function is
started on the engine's event loop and comes back as a future the executor waits on.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any, Callable

from sdgraph.context import NodeContext
from sdgraph.expansion import call_scope, end_call_scope
from sdgraph.node import ExecutionBlocker, NodeOutput
from sdgraph.validate import PreparedNode

Future = concurrent.futures.Future
OnBlock = Callable[[PreparedNode, ExecutionBlocker], ExecutionBlocker]


@dataclass
class Outcome:
    """What a node's calls gave: its slots and UI, or, if a call expanded, each call's (graph or None, result)."""

    slots: tuple[list[Any], ...]
    ui: dict[str, Any] | None
    expansions: list[tuple[dict[str, Any] | None, tuple[Any, ...]]] | None = None


def input_batches(node: PreparedNode, inputs: dict[str, list[Any]], ctx: NodeContext) -> list[dict[str, Any]]:
    """The keyword arguments of each call the node's inputs make (one, unless lists are mapped over)."""
    spec = node.node.spec
    args = dict(node.literals)
    if spec.has_hidden:
        args.update(_hidden_inputs(node, ctx))
    if spec.input_is_list:
        args = {name: [value] for name, value in args.items()}
        args.update(inputs)
        return [args]
    if all([len(values) == 1 for values in inputs.values()]):  # the common case: one call
        args.update({name: values[0] for name, values in inputs.items()})
        return [args]
    count = max((len(values) for values in inputs.values()), default=1)
    if any(not values for values in inputs.values()):
        count = 0
    return [{**args, **{name: values[min(i, len(values) - 1)] for name, values in inputs.items()}}
            for i in range(count)]


def call_batches(node: PreparedNode, batches: list[dict[str, Any]], ctx: NodeContext,
                 function: Callable[[dict[str, Any], NodeContext], Any], on_block: OnBlock | None = None
                 ) -> list[Any]:
    """Each call's raw result; a blocked call gives its blocker, an async one a Future."""
    results = []
    linked = node.links  # blockers only ever come from other nodes
    for index, batch in enumerate(batches):
        blocker = _blocker_in(batch, linked, node.node.spec.input_is_list) if linked else None
        if blocker is not None:
            results.append(on_block(node, blocker) if on_block is not None else blocker)
            continue
        token = call_scope(node.node_id, index)
        try:
            result = function(batch, ctx)
        finally:
            end_call_scope(token)
        if type(result) is not tuple and asyncio.iscoroutine(result):
            result = start_async(result, node.node_id, index)
        results.append(result)
    return results


def _blocker_in(batch: dict[str, Any], linked: Any, input_is_list: bool) -> ExecutionBlocker | None:
    for name in linked:
        value = batch.get(name)
        if isinstance(value, ExecutionBlocker):
            return value
        if input_is_list and isinstance(value, list):
            found = next((item for item in value if isinstance(item, ExecutionBlocker)), None)
            if found is not None:
                return found
    return None


def gather(node: PreparedNode, raws: list[Any]) -> Outcome:
    """Merge each call's result into the node's slots and UI (or its expansions, if any call expanded)."""
    spec = node.node.spec
    if len(raws) == 1 and type(raws[0]) is tuple and len(raws[0]) == len(spec.outputs) and not spec.has_list_output:
        return Outcome(tuple([[value] for value in raws[0]]), None)  # the common case: one call gave its values
    slots: tuple[list[Any], ...] = tuple([] for _ in spec.outputs)
    ui: dict[str, Any] | None = None
    calls = []
    for raw in raws:
        values, call_ui, graph = normalise_result(node, raw)
        calls.append((graph, values))
        if call_ui:
            ui = _merge_ui(ui, call_ui)
    if any(graph is not None for graph, _ in calls):
        return Outcome(slots, ui, calls)
    for _, values in calls:
        add_to_slots(slots, spec.outputs, values)
    return Outcome(slots, ui)


def add_to_slots(slots: tuple[list[Any], ...], outputs: Any, values: tuple[Any, ...]) -> None:
    for slot, out_spec, value in zip(slots, outputs, values):
        if out_spec.is_list and not isinstance(value, ExecutionBlocker):
            slot.extend(value)
        else:
            slot.append(value)


def normalise_result(node: PreparedNode, raw: Any) -> tuple[tuple[Any, ...], dict[str, Any] | None, Any]:
    """Accept a tuple of values, a NodeOutput, a blocker, or the ecosystem's `{"ui", "result", "expand"}` dict;
    return (values, ui, expansion graph or None)."""
    ui = graph = None
    expected = len(node.node.spec.outputs)
    if isinstance(raw, NodeOutput):
        raw, ui, graph = raw.values, raw.ui, raw.expand
    elif isinstance(raw, dict):  # `{}` too: an output node with nothing to show
        ui, graph = raw.get("ui"), raw.get("expand")
        raw = raw.get("result", ())
    if isinstance(raw, ExecutionBlocker):
        raw = (raw,) * expected
    if raw is None:
        raw = ()
    if not isinstance(raw, (tuple, list)):
        raise TypeError(f"node {node.node_id} returned {type(raw).__name__}; expected a tuple of its outputs")
    if len(raw) != expected:
        raise TypeError(f"node {node.node_id} returned {len(raw)} value(s) but declares {expected} output(s)")
    return tuple(raw), ui, graph


def _merge_ui(into: dict[str, Any] | None, more: dict[str, Any]) -> dict[str, Any]:
    if into is None:
        return dict(more)
    for key, value in more.items():
        if isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + value
        else:
            into[key] = value
    return into


# ---- hidden inputs -----------------------------------------------------------------------------------------

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
    if kind == "DYNPROMPT":
        return ctx.dynprompt
    if kind in _FROM_EXTRA_DATA:
        return ctx.extra_data.get(_FROM_EXTRA_DATA[kind])
    return None


def value_digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


# ---- async node functions ------------------------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _engine_loop() -> asyncio.AbstractEventLoop:
    """The process's one event loop for async nodes, on its own daemon thread (started on first use)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="sdgraph-async-nodes", daemon=True).start()
            _loop = loop
        return _loop


def start_async(coroutine: Any, node_id: str, index: int) -> Future:
    """Run a node's coroutine on the engine loop; subgraphs it builds are named after its call."""

    async def scoped() -> Any:
        call_scope(node_id, index)  # the task has its own context: no reset needed
        return await coroutine

    return asyncio.run_coroutine_threadsafe(scoped(), _engine_loop())
