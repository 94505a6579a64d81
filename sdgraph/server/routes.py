"""Prompts, the queue, interrupts and the history: parse the request, ask the executor to prepare, queue, present."""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Callable

from aiohttp import web

from sdgraph import face_hooks
from sdgraph.collector import collector_paused, drain
from sdgraph.prepare import PreparedPrompt
from sdgraph.server.batch import post_prompt_batch
from sdgraph.server.errors import ApiError, parse_json, parse_model, queue_refusals, read_body, read_model
from sdgraph.server.schemas import InterruptRequest, PromptRequest, QueueAction
from sdgraph.server.state import ServerState, state_of
from sdgraph.uiformat import ConversionError, api_to_ui, is_ui_workflow, load_any, name_node_errors, ui_graph
from sdgraph.workflow import Workflow, WorkflowFormatError, parse_workflow

log = logging.getLogger("sdgraph.server")
MAX_QUERY_INT = 2**31 - 1


async def post_prompt(request: web.Request) -> web.Response:
    state = state_of(request)
    raw = await read_body(request, state.config.max_body_bytes)
    reply, status = await asyncio.to_thread(_admit, state, raw)  # a large workflow must not stall the loop
    return web.json_response(reply, status=status)


def _admit(state: ServerState, raw: bytes) -> tuple[dict[str, Any], int]:
    """Parse, prepare and queue one submission (in a worker thread); the reply and its status."""
    with collector_paused():
        data = face_hooks.filter_prompt(parse_json(raw))  # plugins' prompt handlers (wildcards, ...) first
        try:
            return _admit_parsed(state, data)
        finally:  # a large prompt is freed node by node, not in one long hold of the GIL
            drain(data.get("prompt") if isinstance(data, dict) and isinstance(data.get("prompt"), dict) else None)


def _admit_parsed(state: ServerState, data: Any) -> tuple[dict[str, Any], int]:
    body = parse_model(PromptRequest, data)
    extra_data = dict(body.extra_data)
    source: Any = body.prompt
    if is_ui_workflow(body.prompt):  # a UI workflow: queue its API form, keep it as the picture's workflow
        source = _convert(state, body.prompt)
        body.prompt = source.to_api()
        pnginfo = extra_data.get("extra_pnginfo")
        pnginfo = dict(pnginfo) if isinstance(pnginfo, dict) else {}
        pnginfo.setdefault("workflow", source.layout)
        extra_data["extra_pnginfo"] = pnginfo
    prompt = state.executor.prepare(source)
    try:
        return _queue(state, body, extra_data, prompt, source)
    finally:
        prompt.release()


def _queue(state: ServerState, body: PromptRequest, extra_data: dict[str, Any], prompt: PreparedPrompt,
           source: Any) -> tuple[dict[str, Any], int]:
    name_node_errors(prompt.node_errors, getattr(source, "origin", None))
    if not prompt.ok:
        return {"error": prompt.error, "node_errors": prompt.node_errors}, 400
    if body.client_id is not None:
        extra_data["client_id"] = body.client_id
    with queue_refusals():
        item = state.store.put(body.prompt_id or str(uuid.uuid4()), body.prompt, extra_data, list(prompt.outputs),
                               client_id=body.client_id, number=body.number, front=body.front)
    number = int(item.number) if item.number.is_integer() else item.number
    return {"prompt_id": item.prompt_id, "number": number, "node_errors": prompt.node_errors}, 200


def _convert(state: ServerState, data: Any) -> Workflow:
    """The UI workflow converted against the server's nodes; a 400 naming each problem if it cannot be."""
    try:
        return load_any(data, state.executor.registry)
    except ConversionError as exc:
        raise ApiError(400, "invalid_prompt", f"cannot convert the UI workflow: {exc}",
                       node_errors={}, problems=exc.problems) from None
    except WorkflowFormatError as exc:
        raise ApiError(400, "invalid_prompt", str(exc), node_errors={}) from None


async def post_workflow_convert(request: web.Request) -> web.Response:
    """A UI workflow (bare, or as {"workflow": ...}) in, {"prompt": <API format>} out."""
    return await _answer_in_thread(request, _convert_body)


async def _answer_in_thread(request: web.Request, work: Callable[[ServerState, bytes], dict[str, Any]]
                            ) -> web.Response:
    """Read the body on the loop; parse it and do the work in a thread (a large workflow must not stall it)."""
    state = state_of(request)
    raw = await read_body(request, state.config.max_body_bytes)
    return web.json_response(await asyncio.to_thread(work, state, raw))


def _convert_body(state: ServerState, raw: bytes) -> dict[str, Any]:
    data = parse_json(raw)
    graph = ui_graph(data)
    if graph is None:
        raise ApiError(400, "invalid_request", "expected a UI workflow (nodes and links), or {\"workflow\": ...}")
    with collector_paused():
        return {"prompt": _convert(state, graph).to_api()}


async def post_workflow_ui(request: web.Request) -> web.Response:
    """{"prompt": <API format>, "positions": {id: [x, y]}?} in, {"workflow": <UI workflow>} out (the editor's save)."""
    return await _answer_in_thread(request, _ui_body)


def _ui_body(state: ServerState, raw: bytes) -> dict[str, Any]:
    data = parse_json(raw)
    prompt = data.get("prompt") if isinstance(data, dict) else None
    positions = data.get("positions", {}) if isinstance(data, dict) else {}
    if not (isinstance(positions, dict) and all(map(_is_point, positions.values()))):
        raise ApiError(400, "invalid_request", "positions must map node ids to [x, y]")
    try:
        parsed = parse_workflow(prompt)
        if isinstance(prompt, dict) and set(parsed.nodes) != {str(k) for k in prompt}:  # an envelope, not nodes
            raise WorkflowFormatError("the prompt must be the API format's nodes by id")
    except WorkflowFormatError as exc:
        raise ApiError(400, "invalid_request", f"expected {{\"prompt\": <API-format workflow>}}: {exc}") from None
    with collector_paused():
        return {"workflow": api_to_ui(parsed.to_api(), state.executor.registry, positions)}


def _is_point(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


async def get_prompt(request: web.Request) -> web.Response:
    return web.json_response({"exec_info": {"queue_remaining": state_of(request).store.remaining()}})


async def get_queue(request: web.Request) -> web.Response:
    running, pending = state_of(request).store.snapshot()
    body = b"".join((b'{"queue_running": [', b", ".join(item.as_json() for item in running),
                     b'], "queue_pending": [', b", ".join(item.as_json() for item in pending), b"]}"))
    return web.Response(body=body, content_type="application/json")


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
    history = await asyncio.to_thread(store.history_json, max_items, offset if offset is not None else -1)
    return web.Response(body=history, content_type="application/json")


async def get_history_item(request: web.Request) -> web.Response:
    store = state_of(request).store
    history = await asyncio.to_thread(store.history_item_json, request.match_info["prompt_id"])
    return web.Response(body=history, content_type="application/json")


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
    ("POST", "/prompt/batch", post_prompt_batch),
    ("POST", "/workflow/convert", post_workflow_convert),
    ("POST", "/workflow/ui", post_workflow_ui),
    ("GET", "/prompt", get_prompt),
    ("GET", "/queue", get_queue),
    ("POST", "/queue", post_queue),
    ("POST", "/interrupt", post_interrupt),
    ("GET", "/history", get_history),
    ("GET", "/history/{prompt_id}", get_history_item),
    ("POST", "/history", post_history),
]
