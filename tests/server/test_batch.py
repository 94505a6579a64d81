"""POST /prompt/batch: many prompts in one request, queued in order, all or none."""
from __future__ import annotations

from tests.server.conftest import Harness
from tests.server.nodes import chain


async def test_overrides_make_one_prompt_each_run_in_order(server: Harness) -> None:
    resp = await server.client.post("/prompt/batch", json={
        "prompt": chain(1), "overrides": [{"1.value": n} for n in (5, 6, 7)], "client_id": "batcher"})
    reply = await resp.json()
    assert resp.status == 200 and reply["count"] == 3, reply
    assert reply["numbers"] == sorted(reply["numbers"])
    shown = []
    for prompt_id in reply["prompt_ids"]:
        entry = await server.wait_done(prompt_id)
        shown.append(entry["outputs"]["3"]["text"][0])
        assert entry["prompt"][3]["client_id"] == "batcher"
    assert shown == ["5", "6", "7"]


async def test_a_list_of_workflows_is_queued_too(server: Harness) -> None:
    resp = await server.client.post("/prompt/batch", json={"prompts": [chain(2), chain(3)]})
    reply = await resp.json()
    assert resp.status == 200 and reply["count"] == 2
    assert [(await server.wait_done(p))["outputs"]["3"]["text"][0] for p in reply["prompt_ids"]] == ["2", "3"]


async def test_one_invalid_variation_refuses_the_batch_and_names_it(server: Harness) -> None:
    before = server.state.store.remaining()
    resp = await server.client.post("/prompt/batch", json={
        "prompt": chain(1), "overrides": [{"1.value": 4}, {"1.value": "many"}, {"1.value": 6}]})
    reply = await resp.json()
    assert resp.status == 400 and set(reply["batch_errors"]) == {"1"}
    assert "1 of 3 prompts are invalid" in reply["error"]["message"]
    assert reply["batch_errors"]["1"]["node_errors"]["1"]["errors"][0]["type"] == "invalid_input_type"
    assert server.state.store.remaining() == before


async def test_bad_batches_get_a_clear_400(server: Harness) -> None:
    for body, words in [({"prompt": chain(1), "prompts": [chain(1)]}, "not both"), ({}, "neither"),
                        ({"prompt": chain(1), "overrides": [{"nowhere.value": 1}]}, "overrides[0]"),
                        ({"prompt": chain(1), "overrides": [{"value": 1}]}, "expected NODE.input"),
                        ({"prompts": [{"1": {"inputs": {}}}]}, "prompts[0]")]:
        resp = await server.client.post("/prompt/batch", json=body)
        assert resp.status == 400, body
        assert words in (await resp.json())["error"]["message"], body


async def test_a_thousand_prompts_queue_in_one_request(server: Harness) -> None:
    """The timing is bench/bulk_submit.py's; here the count and the order."""
    server.state.store.max_pending = 5000
    resp = await server.client.post("/prompt/batch", json={
        "prompt": chain(1), "overrides": [{"1.value": n} for n in range(1000)]})
    reply = await resp.json()
    assert resp.status == 200 and reply["count"] == len(set(reply["prompt_ids"])) == 1000
    pending, running = server.state.store.snapshot()
    numbers = {item.prompt_id: item.number for item in (*pending, *running)}
    assert [numbers.get(p, -1) for p in reply["prompt_ids"]] == sorted(numbers.get(p, -1) for p in reply["prompt_ids"])
