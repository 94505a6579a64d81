"""POST /prompt/batch: many prompts in one request, validated one by one, queued all at once (or none).

Submitting 1,000 variations of a workflow through POST /prompt costs 1,000 requests, conversions and database
commits; here the workflow is parsed (and a UI workflow converted) once, each variation validated, and all of
them written in one transaction. An invalid variation refuses the whole batch, naming its index and its nodes.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp import web

from sdgraph.collector import collector_paused
from sdgraph.overrides import OverrideError, set_literal
from sdgraph.prepare import PreparedPrompt
from sdgraph.server.errors import ApiError, parse_json, parse_model, queue_refusals, read_body
from sdgraph.server.schemas import PromptBatchRequest
from sdgraph.server.state import ServerState, state_of
from sdgraph.uiformat import is_ui_workflow, load_any, name_node_errors
from sdgraph.workflow import PromptNode, Workflow, WorkflowFormatError, parse_workflow


async def post_prompt_batch(request: web.Request) -> web.Response:
    state = state_of(request)
    raw = await read_body(request, state.config.max_body_bytes)
    reply = await asyncio.to_thread(_admit_batch, state, raw)
    return web.json_response(reply)


def _admit_batch(state: ServerState, raw: bytes) -> dict[str, Any]:
    with collector_paused():
        body = parse_model(PromptBatchRequest, parse_json(raw))
        extra_data = dict(body.extra_data)
        workflows = _variations(state, body, extra_data)
        prepared = [state.executor.prepare(workflow) for workflow in workflows]
        try:
            return _queue_all(state, body, extra_data, workflows, prepared)
        finally:
            for prompt in prepared:
                prompt.release()


def _variations(state: ServerState, body: PromptBatchRequest, extra_data: dict[str, Any]) -> list[Workflow]:
    if (body.prompt is None) == (not body.prompts):
        raise ApiError(400, "invalid_request", "give either `prompt` (with `overrides`) or `prompts`, not both "
                       "or neither", node_errors={})
    if body.prompts:
        return [_parsed(data, f"prompts[{index}]") for index, data in enumerate(body.prompts)]
    base = _base(state, body.prompt, extra_data)
    if not body.overrides:
        return [base]
    return [_overridden(base, index, changes) for index, changes in enumerate(body.overrides)]


def _parsed(data: dict[str, Any], where: str) -> Workflow:
    try:
        return parse_workflow(data)
    except WorkflowFormatError as exc:
        raise ApiError(400, "invalid_prompt", f"{where}: {exc}", node_errors={}) from None


def _base(state: ServerState, data: dict[str, Any], extra_data: dict[str, Any]) -> Workflow:
    if not is_ui_workflow(data):
        return _parsed(data, "prompt")
    try:
        workflow = load_any(data, state.executor.registry)
    except Exception as exc:  # noqa: BLE001 - ConversionError or a format error: the client's, either way
        raise ApiError(400, "invalid_prompt", f"cannot convert the UI workflow: {exc}", node_errors={}) from None
    pnginfo = extra_data.get("extra_pnginfo")
    pnginfo = dict(pnginfo) if isinstance(pnginfo, dict) else {}
    pnginfo.setdefault("workflow", workflow.layout)
    extra_data["extra_pnginfo"] = pnginfo
    return workflow


def _overridden(base: Workflow, index: int, changes: dict[str, Any]) -> Workflow:
    workflow = Workflow({node_id: PromptNode(class_type=node.class_type, inputs=dict(node.inputs), _meta=node.meta)
                         for node_id, node in base.nodes.items()}, base.layout, base.origin)
    for target, value in changes.items():
        node_ref, dot, input_name = target.rpartition(".")
        try:
            if not dot or not node_ref or not input_name:
                raise OverrideError(f"{target!r}: expected NODE.input")
            set_literal(workflow, node_ref, input_name, value)
        except OverrideError as exc:
            raise ApiError(400, "invalid_prompt", f"overrides[{index}]: {exc}", node_errors={}) from None
    return workflow


def _queue_all(state: ServerState, body: PromptBatchRequest, extra_data: dict[str, Any], workflows: list[Workflow],
               prepared: list[PreparedPrompt]) -> dict[str, Any]:
    failed = {}
    for index, (workflow, prompt) in enumerate(zip(workflows, prepared)):
        name_node_errors(prompt.node_errors, workflow.origin)
        if not prompt.ok:
            failed[str(index)] = {"error": prompt.error, "node_errors": prompt.node_errors}
    if failed:
        first = next(iter(failed))
        raise ApiError(400, "invalid_prompt", f"{len(failed)} of {len(workflows)} prompts are invalid (the first "
                       f"is number {first}: {failed[first]['error'].get('message')}); none was queued",
                       node_errors=failed[first]["node_errors"], batch_errors=failed)
    if body.client_id is not None:
        extra_data["client_id"] = body.client_id
    entries = [(str(uuid.uuid4()), workflow.to_api(), list(prompt.outputs))
               for workflow, prompt in zip(workflows, prepared)]
    if body.front:
        entries.reverse()  # each goes before the last: reversed, they run in the order given
    with queue_refusals():
        items = state.store.put_many(entries, extra_data, client_id=body.client_id, front=body.front)
    if body.front:
        items.reverse()
    return {"prompt_ids": [item.prompt_id for item in items],
            "numbers": [int(item.number) if item.number.is_integer() else item.number for item in items],
            "count": len(items)}
