"""Cross-prompt batching through the server: queued prompts that use the same models run as one group; each
keeps its own history entry and its own events, sent to its own client in order."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType

from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.paths import Dirs
from sdgraph.registry import Registry
from tests.engine import test_cobatch as toy
from tests.server import nodes
from tests.server.conftest import Factory, for_prompt


def executor(base: Path, **options) -> Executor:
    registry = Registry()
    registry.add_native(nodes.NODES, "server-tests")
    registry.add_native([toy.ToyLoader, toy.ToyPatch, toy.ToySampler, toy.ToyShow, toy.ToyWait], "cobatch")
    assert not registry.problems
    return Executor(registry, Services(dirs=Dirs(base=base, extra_model_roots=[])), **options)


async def receive_until_all_done(ws, prompt_ids: set[str]) -> list[tuple[str, Any]]:
    """Text frames until each of these prompts has ended (they end in any order)."""
    seen: list[tuple[str, Any]] = []
    ended: set[str] = set()
    while not prompt_ids <= ended:
        frame = await ws.receive(timeout=10)
        if frame.type != WSMsgType.TEXT:
            continue
        data = json.loads(frame.data)
        seen.append((data["type"], data["data"]))
        if data["type"] == "executing" and data["data"].get("node") is None:
            ended.add(data["data"].get("prompt_id"))
    return seen


def held() -> dict:
    """A prompt that holds the worker at a gate, so that the prompts queued behind it wait together."""
    return {"1": {"class_type": "Number", "inputs": {"value": 1}},
            "2": {"class_type": "Gate", "inputs": {"value": ["1", 0], "name": "hold"}},
            "3": {"class_type": "Show", "inputs": {"value": ["2", 0]}}}


async def test_queued_prompts_of_one_model_run_as_a_group_each_with_its_own_history_and_events(
        make_server: Factory, tmp_path: Path) -> None:
    toy.MERGES.clear()
    ex = executor(tmp_path / "base")
    server = await make_server(executor=ex)
    alice, bob = await server.ws("alice"), await server.ws("bob")
    holder = (await server.submit(held(), client_id="carol"))["prompt_id"]
    await server.wait_running(holder)
    seeds = [3, 5, 8, 13, 21]
    queued = [(await server.submit(toy.prompt(seed), client_id="alice" if i % 2 else "bob"))["prompt_id"]
              for i, seed in enumerate(seeds)]
    other = (await server.submit(toy.prompt(99, model="other"), client_id="alice"))["prompt_id"]
    nodes.gate("hold").set()
    entries = [await server.wait_done(prompt_id) for prompt_id in queued + [other]]
    assert all(e["status"]["status_str"] == "success" for e in entries)
    solo = executor(tmp_path / "solo")
    assert [e["outputs"]["4"]["value"] for e in entries] == \
        [solo.run(wf).outputs["4"]["value"] for wf in [toy.prompt(s) for s in seeds] + [toy.prompt(99, model="other")]]
    assert ("base", 5) in toy.MERGES and ("other", 1) in toy.MERGES  # the other model's prompt ran apart

    for ws, mine in ((alice, queued[1::2] + [other]), (bob, queued[0::2])):
        seen = await receive_until_all_done(ws, set(mine))
        for prompt_id in mine:
            events = for_prompt(seen, prompt_id)
            kinds = [kind for kind, _ in events]
            assert kinds[0] == "execution_start" and kinds[-1] == "executing" and "execution_success" in kinds
            assert kinds.index("executed") < kinds.index("execution_success")
        assert {d["prompt_id"] for _, d in seen if isinstance(d, dict) and "prompt_id" in d} <= set(mine)
    await alice.close()
    await bob.close()


async def test_batching_off_runs_the_same_prompts_one_at_a_time(make_server: Factory, tmp_path: Path) -> None:
    toy.MERGES.clear()
    server = await make_server(executor=executor(tmp_path / "base", batch_max=1))
    await server.wait_running((await server.submit(held()))["prompt_id"])
    queued = [(await server.submit(toy.prompt(seed)))["prompt_id"] for seed in (1, 2, 3)]
    nodes.gate("hold").set()
    for prompt_id in queued:
        assert (await server.wait_done(prompt_id))["status"]["status_str"] == "success"
    assert toy.MERGES == [("base", 1)] * 9


async def test_interrupting_one_prompt_of_a_running_group_leaves_the_others(make_server: Factory,
                                                                           tmp_path: Path) -> None:
    server = await make_server(executor=executor(tmp_path / "base"))
    await server.wait_running((await server.submit(held()))["prompt_id"])
    queued = [(await server.submit(toy.prompt(seed, steps=300)))["prompt_id"] for seed in (1, 2, 3)]
    nodes.gate("hold").set()
    for prompt_id in queued:
        await server.wait_running(prompt_id)
    await asyncio.sleep(0.1)
    resp = await server.client.post("/interrupt", json={"prompt_id": queued[1]})
    assert resp.status == 200
    statuses = [(await server.wait_done(p, timeout=30))["status"] for p in queued]
    interrupted = ["execution_interrupted" in [m[0] for m in s["messages"]] for s in statuses]
    assert interrupted == [False, True, False]
