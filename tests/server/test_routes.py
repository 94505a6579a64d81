"""Request validation (clear 4xx, never 500), the /api prefix, node descriptions, system and model routes."""
from __future__ import annotations

import pytest

from tests.server.conftest import Harness, raw_request
from tests.server.nodes import chain


@pytest.mark.parametrize("body, kind", [
    (b"{not json", "invalid_json"),
    (b"", "invalid_json"),
    (b"[1, 2]", "invalid_request"),
    (b'{"prompt": 5}', "invalid_request"),
    (b'{"prompt": {"1": {"inputs": {}}}}', "invalid_prompt"),
    (b'{"prompt": {"1": {"class_type": "Number", "inputs": {"value": NaN}}}}', "invalid_json"),
    (b'{"prompt": {}, "prompt_id": "../../etc"}', "invalid_request"),
    (b'{"prompt": {}, "number": "soon"}', "invalid_request"),
    (b"[" * 100000 + b"]" * 100000, "invalid_json"),
])
async def test_bad_requests_get_a_clear_400(server: Harness, body: bytes, kind: str) -> None:
    resp = await server.client.post("/prompt", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["type"] == kind and error["message"]


@pytest.mark.parametrize("body, status", [(b"", 200), (b" \n\t\r", 200), (b"\x0c", 400), (b"\x0b{}", 400)])
async def test_an_empty_interrupt_body_is_only_json_whitespace(server: Harness, body: bytes, status: int) -> None:
    """POST /interrupt may come without a body; a form feed or vertical tab is not JSON whitespace, so it is bad
    input (found by the schemathesis run)."""
    resp = await server.client.post("/interrupt", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == status, await resp.text()
    if status == 400:
        assert (await resp.json())["error"]["type"] == "invalid_json"


async def test_invalid_workflow_reports_node_errors(server: Harness) -> None:
    prompt = {"1": {"class_type": "Number", "inputs": {"value": "many"}},
              "2": {"class_type": "NoSuchNode", "inputs": {}},
              "3": {"class_type": "Show", "inputs": {"value": ["1", 0]}}}
    resp = await server.client.post("/prompt", json={"prompt": prompt})
    assert resp.status == 400
    data = await resp.json()
    assert data["error"]["type"] == "missing_node_type" and data["error"]["extra_info"]["node_ids"] == ["2"]
    errors = data["node_errors"]
    assert set(errors) == {"1", "2"}, "every node's problem is reported, not only the first"
    bad_value = errors["1"]["errors"][0]
    assert bad_value["type"] == "invalid_input_type" and bad_value["extra_info"]["input_name"] == "value"
    assert errors["1"]["dependent_outputs"] == ["3"] and errors["1"]["class_type"] == "Number"
    assert errors["2"]["errors"][0]["type"] == "missing_node_type"
    empty = await server.client.post("/prompt", json={"prompt": {}})
    assert empty.status == 400 and (await empty.json())["error"]["type"] == "prompt_no_outputs"
    assert (await (await server.client.get("/queue")).json())["queue_pending"] == []


async def test_duplicate_prompt_id_is_refused(server: Harness) -> None:
    await server.submit(chain(1), prompt_id="same")
    resp = await server.client.post("/prompt", json={"prompt": chain(2), "prompt_id": "same"})
    assert resp.status == 400 and (await resp.json())["error"]["type"] == "duplicate_prompt_id"


async def test_request_body_limit(make_server) -> None:
    from sdgraph.server import ServerConfig

    server = await make_server(ServerConfig(max_body_bytes=1000))
    big = {"prompt": chain(1), "extra_data": {"pad": "x" * 2000}}
    resp = await server.client.post("/prompt", json=big)
    assert resp.status == 413

    async def chunks():
        for _ in range(10):
            yield b" " * 500

    resp = await server.client.post("/prompt", data=chunks(), headers={"Content-Type": "application/json"})
    assert resp.status == 413


async def test_api_prefix_and_unknown_routes(server: Harness) -> None:
    reply = await (await server.client.post("/api/prompt", json={"prompt": chain(3)})).json()
    await server.wait_done(reply["prompt_id"])
    assert reply["prompt_id"] in await (await server.client.get("/api/history")).json()
    assert (await server.client.get("/api/prompt")).status == 200
    missing = await server.client.get("/api/nothing-here")
    assert missing.status == 404 and (await missing.json())["error"]["type"] == "not_found"
    wrong = await server.client.delete("/prompt")
    assert wrong.status == 405


async def test_object_info(server: Harness) -> None:
    info = await (await server.client.get("/object_info")).json()
    assert {"Number", "Add", "Show"} <= set(info)
    number = info["Number"]
    assert number["input"]["required"]["value"][0] == "INT" and number["output"] == ["INT"]
    one = await (await server.client.get("/api/object_info/Show")).json()
    assert list(one) == ["Show"] and one["Show"]["output_node"] is True
    assert await (await server.client.get("/object_info/Nope")).json() == {}


async def test_system_stats_models_embeddings(server: Harness) -> None:
    stats = await (await server.client.get("/system_stats")).json()
    assert stats["system"]["python_version"]
    device = stats["devices"][0]
    assert device["vram_total"] >= device["vram_free"] >= 0
    (server.base / "models" / "checkpoints" / "sub").mkdir(parents=True)
    (server.base / "models" / "checkpoints" / "a.safetensors").write_bytes(b"x")
    (server.base / "models" / "checkpoints" / "sub" / "b.ckpt").write_bytes(b"x")
    (server.base / "models" / "embeddings").mkdir(parents=True)
    (server.base / "models" / "embeddings" / "style.pt").write_bytes(b"x")
    folders = await (await server.client.get("/models")).json()
    assert "checkpoints" in folders and "loras" in folders
    assert await (await server.client.get("/models/checkpoints")).json() == ["a.safetensors", "sub/b.ckpt"]
    assert await (await server.client.get("/embeddings")).json() == ["style"]
    assert (await server.client.get("/models/nope")).status == 404
    for target in ("/models/..", "/models/%2e%2e", "/models/%2E%2E%2Fetc"):
        status, _, _ = await raw_request(server, "GET", target)
        assert status in (400, 404), target


async def test_openapi_and_index(server: Harness) -> None:
    spec = await (await server.client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.") and "/prompt" in spec["paths"] and "/upload/image" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert "PromptRequest" in schemas and "PromptNode" in schemas
    assert "$defs" not in str(spec)
    page = await server.client.get("/")
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert (await server.client.head("/")).status == 200
    assert (await server.client.head("/api/queue")).status == 200
    features = await (await server.client.get("/features")).json()
    assert features["max_upload_size"] == 100 * 1024 * 1024
