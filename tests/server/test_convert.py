"""UI-format workflows over HTTP: POST /prompt converts and queues them, POST /workflow/convert only converts."""
from __future__ import annotations

from tests.server.conftest import Harness
from tests.uiformat.builders import graph, node


def ui_sum(left_mode: int = 0) -> dict:
    left = node(1, "Number", [2], outputs=["INT"], title="left", mode=left_mode)
    right = node(2, "Number", [40], outputs=["INT"])
    add = node(3, "Add", [], inputs=[("a", "INT", 1), ("b", "INT", 2)], outputs=["INT"], title="sum")
    show = node(4, "Show", [], inputs=[("value", "INT", 3)])
    note = node(5, "Note", ["a note"])
    return graph([left, right, add, show, note],
                 [[1, 1, 0, 3, 0, "INT"], [2, 2, 0, 3, 1, "INT"], [3, 3, 0, 4, 0, "INT"]])


async def test_post_prompt_with_a_ui_workflow_converts_runs_and_keeps_it(server: Harness):
    workflow = ui_sum()
    reply = await server.submit(workflow)
    done = await server.wait_done(reply["prompt_id"])
    assert done["outputs"]["4"] == {"text": ["42"]}
    number, prompt_id, prompt, extra_data, outputs = done["prompt"][:5]
    assert prompt["3"] == {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}, "_meta": {"title": "sum"}}
    assert "5" not in prompt
    assert extra_data["extra_pnginfo"]["workflow"] == workflow


async def test_a_given_extra_pnginfo_workflow_is_kept(server: Harness):
    reply = await server.submit(ui_sum(), extra_data={"extra_pnginfo": {"workflow": {"mine": True}}})
    done = await server.wait_done(reply["prompt_id"])
    assert done["prompt"][3]["extra_pnginfo"]["workflow"] == {"mine": True}


async def test_post_prompt_names_the_ui_node_in_validation_errors(server: Harness):
    resp = await server.client.post("/prompt", json={"prompt": ui_sum(left_mode=2)})
    body = await resp.json()
    assert resp.status == 400
    entry = body["node_errors"]["3"]
    assert entry["class_type"] == "Add" and entry["ui_node"] == {"ui_id": 3, "title": "sum", "path": ""}
    assert "muted node left (#1)" in entry["errors"][0]["ui_hint"]


async def test_post_prompt_refuses_an_unconvertible_ui_workflow_naming_the_node(server: Harness):
    bad = graph([node(7, "Mystery", [1], title="What")], [])
    resp = await server.client.post("/prompt", json={"prompt": bad})
    body = await resp.json()
    assert resp.status == 400
    assert body["problems"] == [{"node_id": 7, "title": "What", "path": "",
                                 "message": "unknown node type 'Mystery'"}]
    assert "node 7 'What'" in body["error"]["message"]


async def test_workflow_convert_answers_the_prompt_bare_or_wrapped(server: Harness):
    for body in (ui_sum(), {"workflow": ui_sum()}):
        resp = await server.client.post("/workflow/convert", json=body)
        data = await resp.json()
        assert resp.status == 200, data
        assert set(data["prompt"]) == {"1", "2", "3", "4"}
        assert data["prompt"]["1"]["inputs"] == {"value": 2}
    assert server.state.store.remaining() == 0  # nothing was queued


async def test_workflow_convert_400s(server: Harness):
    resp = await server.client.post("/workflow/convert", json={"1": {"class_type": "Number", "inputs": {}}})
    assert resp.status == 400 and (await resp.json())["error"]["type"] == "invalid_request"
    resp = await server.client.post("/workflow/convert", json=graph([node(7, "Mystery", [])], []))
    body = await resp.json()
    assert resp.status == 400 and body["problems"][0]["node_id"] == 7
    resp = await server.client.post("/workflow/convert", json={"nodes": [{"id": [1]}], "links": [[1, [2], 0]]})
    assert resp.status in (200, 400)  # malformed parts are skipped or refused, never a 500
    resp = await server.client.post("/api/workflow/convert", json={"workflow": ui_sum()})
    assert resp.status == 200


async def test_openapi_describes_the_route(server: Harness):
    spec = await (await server.client.get("/openapi.json")).json()
    assert "post" in spec["paths"]["/workflow/convert"]


async def test_workflow_ui_answers_a_ui_workflow_that_converts_back(server: Harness):
    prompt = {"1": {"class_type": "Number", "inputs": {"value": 2}, "_meta": {"title": "left"}},
              "2": {"class_type": "Number", "inputs": {"value": 40}},
              "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
              "4": {"class_type": "Show", "inputs": {"value": ["3", 0]}}}
    resp = await server.client.post("/workflow/ui", json={"prompt": prompt, "positions": {"3": [500, 70]}})
    data = await resp.json()
    assert resp.status == 200, data
    ui = data["workflow"]
    by_id = {n["id"]: n for n in ui["nodes"]}
    assert by_id[3]["pos"] == [500, 70] and by_id[1]["title"] == "left"
    assert by_id[1]["widgets_values"] == [2] and len(ui["links"]) == 3 and ui["last_link_id"] == 3
    back = await (await server.client.post("/workflow/convert", json=ui)).json()
    assert {k: v["inputs"] for k, v in back["prompt"].items()} == {k: v["inputs"] for k, v in prompt.items()}
    assert server.state.store.remaining() == 0


async def test_workflow_ui_400s(server: Harness):
    for body in ({"nodes": [], "links": []}, {"prompt": {"1": {"inputs": {}}}}, {"prompt": [1]}, [1],
                 {"prompt": {}, "positions": {"1": [1, "2"]}}, {"prompt": {"prompt": {}, "workflow": {}}}):
        resp = await server.client.post("/workflow/ui", json=body)
        assert resp.status == 400, body
        assert (await resp.json())["error"]["type"] == "invalid_request"
    spec = await (await server.client.get("/openapi.json")).json()
    assert "post" in spec["paths"]["/workflow/ui"]
