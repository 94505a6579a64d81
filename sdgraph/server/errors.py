"""Client errors as clear 4xx JSON, bounded body reading, and the middleware that keeps 500s for real bugs.

Every error body is `{"error": {"type", "message", "details", "extra_info"}}` (the shape /prompt uses).
"""
from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from typing import Any, Awaitable, Callable, Iterator, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from sdgraph.paths import PathTooDeep, UnsafePath
from sdgraph.server import piecewise_json
from sdgraph.server.queue import DuplicatePrompt, QueueFull, StorageFull

log = logging.getLogger("sdgraph.server")
Model = TypeVar("Model", bound=BaseModel)


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.extra = extra


def error_body(type_: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "details": details, "extra_info": {}}, **extra}


def error_response(status: int, type_: str, message: str, **extra: Any) -> web.Response:
    return web.json_response(error_body(type_, message, **extra), status=status)


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.type, exc.message, **exc.extra)
    except PathTooDeep as exc:
        return error_response(400, "path_too_deep", str(exc))
    except UnsafePath as exc:
        return error_response(403, "unsafe_path", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400 or exc.status == 401:
            raise
        message = exc.text or exc.reason
        response = error_response(exc.status, exc.reason.lower().replace(" ", "_"), message)
        for name in ("Allow",):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except (ConnectionError, TimeoutError):
        raise
    except Exception as exc:  # noqa: BLE001 - a bug: log it, say so, keep serving
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", f"{type(exc).__name__}: the server failed on this request")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refusing one over `limit` bytes without reading all of it."""
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    data = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        data += chunk
        if len(data) > limit:
            raise ApiError(413, "body_too_large", f"request body over {limit} bytes")
    return bytes(data)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_STRICT = json.JSONDecoder(parse_constant=_no_constants)
PIECEWISE_BYTES = 1 << 20


async def read_json(request: web.Request, limit: int, *, allow_empty: bool = False) -> Any:
    return parse_json(await read_body(request, limit), allow_empty=allow_empty)


JSON_WHITESPACE = b" \t\n\r"  # what JSON allows around a value (bytes.strip() would also take \f and \v)


def parse_json(body: bytes, *, allow_empty: bool = False) -> Any:
    if not body.strip(JSON_WHITESPACE):
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_json", "the request body is empty; expected a JSON object")
    try:
        if len(body) < PIECEWISE_BYTES:
            return json.loads(body, parse_constant=_no_constants)
        # A large body (a big workflow): the envelope and the prompt member by member, so the loop keeps its turn.
        return piecewise_json.loads(body.decode(), depth=2, decoder=_STRICT)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None


async def read_model(request: web.Request, model: type[Model], limit: int, *, allow_empty: bool = False) -> Model:
    data = await read_json(request, limit, allow_empty=allow_empty)
    return parse_model(model, data)


def parse_model(model: type[Model], data: Any) -> Model:
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", f"expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ApiError(400, "invalid_request", describe_validation(exc)) from None
    except RecursionError:
        raise ApiError(400, "invalid_request", "the request is nested too deeply") from None


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


@contextmanager
def queue_refusals() -> Iterator[None]:
    """The queue's refusals as the client's errors: a prompt id in use (400), a full queue (429), a full disk (507)."""
    try:
        yield
    except DuplicatePrompt as exc:
        raise ApiError(400, "duplicate_prompt_id", str(exc), node_errors={}) from None
    except QueueFull as exc:
        raise ApiError(429, "queue_full", str(exc), node_errors={}) from None
    except StorageFull as exc:
        raise ApiError(507, "insufficient_storage", str(exc), node_errors={}) from None
