"""`/openapi.json`: the HTTP API described for clients and schema-driven fuzzers (OpenAPI 3.1).

Request bodies come from the pydantic models in `schemas.py`; the rest is written out here, kept beside the routes.
"""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from sdgraph.server.schemas import FreeRequest, InterruptRequest, PromptBatchRequest, PromptRequest, QueueAction
from sdgraph.workflow import json_schema as workflow_schema

JSON = "application/json"
ERROR = {"$ref": "#/components/schemas/Error"}
OBJECT = {"type": "object", "additionalProperties": True}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "invalid request", 403: "path or origin refused", 404: "not found", 409: "name clash",
            413: "too large"}
    return {str(code): _json(ERROR, text[code]) for code in codes}


def _query(name: str, schema: dict[str, Any], description: str = "", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def _body(ref: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in (PromptRequest, PromptBatchRequest, QueueAction, InterruptRequest, FreeRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    workflow = workflow_schema()
    out.update(workflow.pop("$defs", {}))
    out["Workflow"] = workflow
    out["PromptRequest"]["properties"]["prompt"] = {"$ref": "#/components/schemas/Workflow"}
    out["Error"] = {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "object", "properties": {"type": {"type": "string"}, "message": {"type": "string"},
                                                   "details": {"type": "string"}, "extra_info": OBJECT}},
        "node_errors": OBJECT}}
    out["UiWorkflow"] = {"type": "object", "description": "a UI workflow (nodes, links, definitions...), or "
                         "{workflow: <UI workflow>}", "additionalProperties": True}
    problem = {"type": "object", "properties": {"node_id": {}, "title": {"type": "string"},
                                                 "path": {"type": "string"}, "message": {"type": "string"}}}
    out["ConversionFailed"] = {"type": "object", "required": ["error"], "properties": {
        "error": out["Error"]["properties"]["error"], "problems": {"type": "array", "items": problem}}}
    out["PromptRequest"]["properties"]["prompt"] = {
        "anyOf": [{"$ref": "#/components/schemas/Workflow"}, {"$ref": "#/components/schemas/UiWorkflow"}],
        "description": "API-format workflow, or a UI workflow (converted; kept as extra_pnginfo.workflow)"}
    out["PromptBatchRequest"]["properties"]["prompts"]["items"] = {"$ref": "#/components/schemas/Workflow"}
    out["PromptBatchReply"] = {"type": "object", "required": ["prompt_ids", "numbers", "count"], "properties": {
        "prompt_ids": {"type": "array", "items": {"type": "string"}},
        "numbers": {"type": "array", "items": {"type": "number"}}, "count": {"type": "integer"}}}
    out["PromptReply"] = {"type": "object", "required": ["prompt_id", "number", "node_errors"], "properties": {
        "prompt_id": {"type": "string"}, "number": {"type": "number"}, "node_errors": OBJECT}}
    upload = {"image": {"type": "string", "format": "binary"},
              "subfolder": {"type": "string"}, "type": {"type": "string", "enum": ["input", "temp", "output"]},
              "overwrite": {"type": "string", "enum": ["true", "false", "1", "0"]}}
    out["Upload"] = {"type": "object", "required": ["image"], "properties": upload}
    out["MaskUpload"] = {"type": "object", "required": ["image", "original_ref"], "properties": {
        **upload, "original_ref": {"type": "string", "contentMediaType": "application/json",
                                   "description": "JSON {filename, subfolder, type} of the image the mask is for"}}}
    out["UploadReply"] = {"type": "object", "properties": {
        "name": {"type": "string"}, "subfolder": {"type": "string"}, "type": {"type": "string"}}}
    return json.loads(json.dumps(out).replace('"#/$defs/', '"#/components/schemas/'))


def _upload(summary: str, schema: str) -> dict[str, Any]:
    return {"post": {"summary": summary, "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}},
        "responses": {"200": _json({"$ref": "#/components/schemas/UploadReply"}), **_errors(400, 403, 404, 409, 413)}}}


def build() -> dict[str, Any]:
    ids = {"type": "object", "properties": {"max_items": {"type": "integer"}}}
    paths: dict[str, Any] = {
        "/prompt": {
            "get": {"summary": "queue status", "responses": {"200": _json(OBJECT)}},
            "post": {"summary": "validate and queue a workflow", "requestBody": _body("PromptRequest"),
                     "responses": {"200": _json({"$ref": "#/components/schemas/PromptReply"}),
                                   **_errors(400, 413)}}},
        "/prompt/batch": {"post": {
            "summary": "validate and queue many prompts, all or none: one workflow with a list of overrides, or "
                       "a list of workflows", "requestBody": _body("PromptBatchRequest"),
            "responses": {"200": _json({"$ref": "#/components/schemas/PromptBatchReply"}), **_errors(400, 413)}}},
        "/workflow/convert": {"post": {
            "summary": "convert a UI (litegraph) workflow to the API format without queueing it",
            "requestBody": _body("UiWorkflow"),
            "responses": {"200": _json({"type": "object", "required": ["prompt"], "properties": {
                "prompt": {"$ref": "#/components/schemas/Workflow"}}}),
                "400": _json({"$ref": "#/components/schemas/ConversionFailed"}, "not a UI workflow, or it cannot "
                             "be converted (each problem names the node)"), **_errors(413)}}},
        "/workflow/ui": {"post": {
            "summary": "an API-format workflow as a UI (litegraph) workflow, laid out, for ComfyUI and the editor",
            "requestBody": {"required": True, "content": {JSON: {"schema": {
                "type": "object", "required": ["prompt"], "properties": {
                    "prompt": {"$ref": "#/components/schemas/Workflow"},
                    "positions": {"type": "object", "description": "node id -> [x, y]; other nodes are laid out",
                                  "additionalProperties": {"type": "array", "items": {"type": "number"},
                                                           "minItems": 2, "maxItems": 2}}}}}}},
            "responses": {"200": _json({"type": "object", "required": ["workflow"], "properties": {
                "workflow": {"$ref": "#/components/schemas/UiWorkflow"}}}), **_errors(400, 413)}}},
        "/queue": {
            "get": {"summary": "running and pending prompts", "responses": {"200": _json(OBJECT)}},
            "post": {"summary": "clear the queue or delete pending prompts", "requestBody": _body("QueueAction"),
                     "responses": {"200": _json(OBJECT), **_errors(400, 413)}}},
        "/interrupt": {"post": {"summary": "interrupt the running prompt (or only the given one)",
                                "requestBody": _body("InterruptRequest", required=False),
                                "responses": {"200": _json(OBJECT), **_errors(400)}}},
        "/history": {
            "get": {"summary": "finished prompts, oldest first", "parameters": [
                _query("max_items", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                       "the most recent N unless offset is given"),
                _query("offset", {"type": "integer", "minimum": -1, "maximum": 2**31 - 1})],
                "responses": {"200": _json(OBJECT), **_errors(400)}},
            "post": {"summary": "clear the history or delete entries", "requestBody": _body("QueueAction"),
                     "responses": {"200": _json(OBJECT), **_errors(400, 413)}}},
        "/history/{prompt_id}": {"get": {"summary": "one finished prompt", "parameters": [_path("prompt_id")],
                                         "responses": {"200": _json(OBJECT)}}},
        "/object_info": {"get": {"summary": "every node class", "responses": {"200": _json(OBJECT)}}},
        "/object_info/{node_class}": {"get": {"summary": "one node class", "parameters": [_path("node_class")],
                                              "responses": {"200": _json(OBJECT)}}},
        "/view": {"get": {"summary": "a file from output, input or temp", "parameters": [
            _query("filename", {"type": "string", "minLength": 1}, required=True),
            _query("subfolder", {"type": "string"}),
            _query("type", {"type": "string", "enum": ["output", "input", "temp"]}),
            _query("preview", {"type": "string"}, "webp;90, jpeg;80 or png"),
            _query("channel", {"type": "string", "enum": ["rgba", "rgb", "a"]})],
            "responses": {"200": {"description": "the file"}, **_errors(400, 403, 404, 413)}}},
        "/upload/image": _upload("upload an image into input (or temp/output)", "Upload"),
        "/upload/mask": _upload("upload a mask; its alpha is applied to original_ref", "MaskUpload"),
        "/system_stats": {"get": {"summary": "system and devices", "responses": {"200": _json(OBJECT)}}},
        "/models": {"get": {"summary": "model folders", "responses": {"200": _json({"type": "array"})}}},
        "/models/{folder}": {"get": {"summary": "models in a folder", "parameters": [
            {**_path("folder"), "schema": {"type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"}}],
                                     "responses": {"200": _json({"type": "array"}), **_errors(400, 404)}}},
        "/embeddings": {"get": {"summary": "embedding names", "responses": {"200": _json({"type": "array"})}}},
        "/free": {"post": {"summary": "unload models and/or free memory between prompts",
                           "requestBody": _body("FreeRequest", required=False),
                           "responses": {"200": _json(OBJECT), **_errors(400)}}},
        "/features": {"get": {"summary": "server features", "responses": {"200": _json(ids)}}},
        "/extensions": {"get": {"summary": "the browser extension files of the node packs (their WEB_DIRECTORY)",
                                "responses": {"200": _json({"type": "array", "items": {"type": "string"}})}}},
        "/extensions/{pack}/{path}": {"get": {
            "summary": "a file of a pack's WEB_DIRECTORY (no token needed: code, like the editor's files)",
            "parameters": [_path("pack"), _path("path")],
            "responses": {"200": {"description": "the file"}, **_errors(404)}}},
        "/node_problems": {"get": {"summary": "packs and nodes that failed to load, the missing module named",
                                   "responses": {"200": _json({"type": "object", "required": ["problems"],
                                                               "properties": {"problems": {"type": "array"}}})}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "sdgraph", "version": "1", "description":
                 "ComfyUI-compatible HTTP API; every path is also served under /api. Events: WebSocket /ws."},
        "paths": paths,
        "components": {"schemas": _schemas(), "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}},
    }


_SPEC: dict[str, Any] | None = None


async def openapi_json(request: web.Request) -> web.Response:
    global _SPEC
    if _SPEC is None:
        _SPEC = build()
    return web.json_response(_SPEC)


ROUTES: list[tuple[str, str, Any]] = [("GET", "/openapi.json", openapi_json)]
