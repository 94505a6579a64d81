"""Prompts, the queue, interrupts and the history: parse the request, ask the executor to validate, queue, present."""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import web

from sdgraph.server.errors import ApiError, read_model, workflow_error
from sdgraph.server.queue import DuplicatePrompt
from sdgraph.server.schemas import InterruptRequest, PromptRequest, QueueAction
from sdgraph.server.state import state_of
from sdgraph.workflow import WorkflowFormatError, parse_workflow

log = logging.getLogger("sdgraph.server")
MAX_QUERY_INT = 2**31 - 1


async def post_prompt(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_model(request, PromptRequest, state.config.max_body_bytes)
    try:
        workflow = parse_workflow(body.prompt)
    except WorkflowFormatError as exc:
        raise workflow_error(exc) from None
    try:
        report = state.executor.validate(workflow)
    except RecursionError:
        raise ApiError(400, "invalid_prompt", "the workflow is nested too deeply", node_errors={}) from None
    except Exception as exc:  # noqa: BLE001 - a node's own check failed: the prompt is refused, not the server
        log.exception("validation raised")
        raise ApiError(400, "invalid_prompt", f"validation failed: {type(exc).__name__}: {exc}",
                       node_errors={}) from None
    if not report.ok:
        return web.json_response({"error": report.error, "node_errors": report.node_errors}, status=400)
    extra_data = dict(body.extra_data)
    if body.client_id is not None:
        extra_data["client_id"] = body.client_id
    try:
        item = state.store.put(body.prompt_id or str(uuid.uuid4()), body.prompt, extra_data, list(report.outputs),
                               client_id=body.client_id, number=body.number, front=body.front,
                               workflow=workflow, report=report)
    except DuplicatePrompt as exc:
        raise ApiError(400, "duplicate_prompt_id", str(exc), node_errors={}) from None
    state.hub.send_status()
    number = int(item.number) if item.number.is_integer() else item.number
    return web.json_response({"prompt_id": item.prompt_id, "number": number, "node_errors": report.node_errors})


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response({"exec_info": {"queue_remaining": state_of(request).store.remaining()}})


async def get_queue(request: web.Request) -> web.Response:
    running, pending = state_of(request).store.snapshot()
    return web.json_response({"queue_running": [item.as_list() for item in running],
                              "queue_pending": [item.as_list() for item in pending]})


async def post_queue(request: web.Request) -> web.Response:
    state = state_of(request)
    action = await read_model(request, QueueAction, state.config.max_body_bytes)
    cleared = state.store.clear_pending() if action.clear else 0
    deleted = state.store.delete_pending(action.delete) if action.delete else 0
    state.hub.send_status()
    return web.json_response({"cleared": cleared, "deleted": deleted})


async def post_interrupt(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_model(request, InterruptRequest, state.config.max_body_bytes, allow_empty=True)
    return web.json_response({"interrupted": state.worker.interrupt(body.prompt_id)})


def _int_query(request: web.Request, name: str, default: int | None, minimum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{name} must be an integer, got {raw[:40]!r}") from None
    if not minimum <= value <= MAX_QUERY_INT:
        raise ApiError(400, "invalid_query", f"{name} must be between {minimum} and {MAX_QUERY_INT}")
    return value


async def get_history(request: web.Request) -> web.Response:
    max_items = _int_query(request, "max_items", None, 0)
    offset = _int_query(request, "offset", -1, -1)
    store = state_of(request).store
    history = await asyncio.to_thread(store.history, max_items, offset if offset is not None else -1)
    return web.json_response(history)


async def get_history_item(request: web.Request) -> web.Response:
    store = state_of(request).store
    return web.json_response(await asyncio.to_thread(store.history_item, request.match_info["prompt_id"]))


async def post_history(request: web.Request) -> web.Response:
    state = state_of(request)
    action = await read_model(request, QueueAction, state.config.max_body_bytes)
    if action.clear:
        state.store.clear_history()
    if action.delete:
        state.store.delete_history(action.delete)
    return web.json_response({})


ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/prompt", post_prompt),
    ("GET", "/prompt", get_prompt),
    ("GET", "/queue", get_queue),
    ("POST", "/queue", post_queue),
    ("POST", "/interrupt", post_interrupt),
    ("GET", "/history", get_history),
    ("GET", "/history/{prompt_id}", get_history_item),
    ("POST", "/history", post_history),
]
