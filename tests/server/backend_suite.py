"""The behaviour every multi-worker backend must show, written once; test_pool_subprocess and test_pool_ray run it.

`Make` builds a served app over a backend with `count` workers and a routing policy, and returns the harness
once every worker has started.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import WSMsgType

from tests.server.conftest import TERMINAL, Harness, for_prompt, receive_until_done, receive_until_executing
from tests.server.nodes import chain
from tests.server.worker_nodes import loads, model_prompt, save_prompt

Make = Callable[..., Awaitable[Harness]]


async def wait_workers(server: Harness, count: int, timeout: float = 120.0) -> list[dict[str, Any]]:
    """/system_stats' workers once `count` of them have started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = (await (await server.client.get("/system_stats")).json())["workers"]
        if len(workers) == count and all(w["alive"] and w["pid"] for w in workers):
            return workers
        await asyncio.sleep(0.1)
    raise AssertionError(f"workers never all started: {workers}")


async def run_all(server: Harness, prompts: list[dict[str, Any]], timeout: float = 120.0) -> float:
    """Submit the prompts at once; seconds until the last is in the history."""
    start = time.perf_counter()
    ids = [(await server.submit(prompt, prompt_id=f"p{i:03d}"))["prompt_id"] for i, prompt in enumerate(prompts)]
    assert await asyncio.to_thread(server.state.store.wait_idle, timeout)
    seconds = time.perf_counter() - start
    history = await (await server.client.get("/history")).json()
    assert sorted(history) == sorted(ids)
    return seconds


async def throughput(make: Make) -> tuple[float, float]:
    """20 prompts of 0.4 s of sleeping on 1 worker, then on 2: the seconds each took."""
    prompts = [chain(i, middle="Slow", seconds=0.4, steps=4) for i in range(20)]
    times = []
    for count in (1, 2):
        server = await make(count)
        times.append(await run_all(server, prompts))
        await server.client.close()
    return times[0], times[1]


async def affinity_loads(make: Make, base: Path, policy: str) -> tuple[int, dict[str, int]]:
    """40 prompts alternating two models (each load LOAD_SECONDS) on 2 workers: loads in all, and per model."""
    server = await make(2, policy=policy, base=base)
    # Run times vary (in a cycle of 3 against the models' 2), so plain queue order does not stay affine by chance.
    prompts = [model_prompt("a.safetensors" if i % 2 == 0 else "b.safetensors", i, seconds=(0.05, 0.2, 0.1)[i % 3])
               for i in range(40)]
    await run_all(server, prompts)
    await server.client.close()
    seen = loads(base)
    per_model = {name: sum(1 for _, n in seen if n == name) for name in ("a.safetensors", "b.safetensors")}
    return len(seen), per_model


async def rare_model_place(make: Make, base: Path) -> tuple[int, float, float]:
    """30 prompts for a popular model, one for a rare one, 30 more for the popular: the rare one's place in the
    order the prompts started (0-based), its seconds from submission to the history, and the whole queue's."""
    server = await make(2, base=base)
    prompts = [model_prompt("a.safetensors", i, seconds=0.1) for i in range(30)]
    prompts.append(model_prompt("b.safetensors", 999, seconds=0.1))
    prompts += [model_prompt("a.safetensors", 100 + i, seconds=0.1) for i in range(30)]
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        await server.submit(prompt, prompt_id="rare" if i == 30 else f"p{i:03d}")
    done = await server.wait_done("rare", timeout=120)
    rare_seconds = time.perf_counter() - start
    assert done["status"]["status_str"] == "success"
    assert await asyncio.to_thread(server.state.store.wait_idle, 120)
    total = time.perf_counter() - start
    history = await (await server.client.get("/history")).json()
    await server.client.close()
    started = sorted(history, key=lambda pid: history[pid]["status"]["messages"][0][1]["timestamp"])
    return started.index("rare"), rare_seconds, total


async def receive_until_all_done(ws: Any, prompt_ids: set[str], timeout: float = 60) -> list[tuple[str, Any]]:
    frames: list[tuple[str, Any]] = []
    ended: set[str] = set()
    while not prompt_ids <= ended:
        msg = await ws.receive(timeout=timeout)
        if msg.type == WSMsgType.BINARY:
            frames.append(("binary", msg.data))
            continue
        frame = json.loads(msg.data)
        frames.append((frame["type"], frame["data"]))
        if frame["type"] == "executing" and frame["data"].get("node") is None:
            ended.add(frame["data"].get("prompt_id"))
    return frames


def expected_order_ok(frames: list[tuple[str, Any]], prompt_id: str) -> None:
    """One prompt's events, in the protocol's order: start, executing/progress/executed per node, success, end."""
    types = [t for t, _ in for_prompt(frames, prompt_id)]
    assert types[0] == "execution_start" and types[-2:] == ["execution_success", "executing"], types
    progress = [d["value"] for t, d in for_prompt(frames, prompt_id) if t == "progress"]
    assert progress == sorted(progress) and progress, types
    assert sum(t in TERMINAL for t in types) == 1


async def events_to_the_right_client(make: Make) -> None:
    server = await make(2)
    sockets = {name: await server.ws(name) for name in ("alice", "bob")}
    ids: dict[str, list[str]] = {"alice": [], "bob": []}
    for i in range(3):
        for name in sockets:
            prompt = chain(i, middle="Slow", seconds=0.2, steps=4)
            ids[name].append((await server.submit(prompt, client_id=name, prompt_id=f"{name}{i}"))["prompt_id"])
    for name, ws in sockets.items():
        frames = await receive_until_all_done(ws, set(ids[name]))  # two workers: this client's prompts overlap
        mine = {d.get("prompt_id") for t, d in frames if t not in ("status", "binary")}
        assert mine <= set(ids[name]), (name, mine)  # nothing of the other client's prompts
        for prompt_id in ids[name]:
            expected_order_ok(frames, prompt_id)
        await ws.close()


async def previews_arrive(make: Make) -> None:
    server = await make(1)
    ws = await server.ws("viewer")
    reply = await server.submit(chain(1, middle="Previewer"), client_id="viewer")
    frames = await receive_until_done(ws, reply["prompt_id"], timeout=60)
    binary = [data for kind, data in frames if kind == "binary"]
    assert len(binary) == 2 and binary[0][:8] == b"\x00\x00\x00\x01\x00\x00\x00\x02"  # PNG, then JPEG
    assert binary[1][4:8] == b"\x00\x00\x00\x01"


async def interrupt_reaches_the_worker(make: Make) -> None:
    server = await make(1)
    reply = await server.submit(chain(1, middle="Slow", seconds=30.0, steps=300), prompt_id="long")
    await server.wait_running("long")
    await asyncio.sleep(1.0)  # surely inside the node now
    start = time.perf_counter()
    assert await (await server.client.post("/interrupt", json={"prompt_id": "long"})).json() == {"interrupted": True}
    done = await server.wait_done(reply["prompt_id"], timeout=30)
    assert time.perf_counter() - start < 10
    assert done["status"]["messages"][-1][0] == "execution_interrupted"


async def worker_killed_mid_prompt(make: Make, kill: Callable[[Harness, str], Any]) -> dict[str, Any]:
    """Kill the worker running a long prompt: it is retried on the other worker and completes once; the other
    worker's prompt is unaffected; the killed worker is replaced."""
    server = await make(2)
    victim = chain(5, middle="Slow", seconds=2.0, steps=20)
    await server.submit(victim, prompt_id="victim")
    await server.wait_running("victim")
    await server.submit(chain(6, middle="Slow", seconds=2.0, steps=20), prompt_id="bystander")
    await server.wait_running("bystander")
    workers = (await (await server.client.get("/system_stats")).json())["workers"]
    running = {w["prompt_id"]: w["name"] for w in workers if w["prompt_id"]}
    await asyncio.sleep(0.5)
    await asyncio.to_thread(kill, server, running["victim"])
    done = await server.wait_done("victim", timeout=60)
    other = await server.wait_done("bystander", timeout=60)
    assert done["status"]["status_str"] == "success" and done["outputs"] == {"3": {"text": ["5"]}}
    assert other["status"]["status_str"] == "success" and other["outputs"] == {"3": {"text": ["6"]}}
    history = await (await server.client.get("/history")).json()
    assert sorted(history) == ["bystander", "victim"]  # once each
    after = await wait_workers(server, 2)
    by_name = {w["name"]: w for w in after}
    assert by_name[running["victim"]]["restarts"] == 1 and by_name[running["victim"]]["lost"] == 1
    assert by_name[running["bystander"]]["restarts"] == 0
    return {"running": running, "history": history}


async def exit_inside_a_node(make: Make) -> None:
    """os._exit in a node, first attempt only: retried elsewhere, completes once. Always: failed after two."""
    server = await make(2)
    await server.submit(chain(7, middle="ExitOnce", delay=0.3), prompt_id="once")
    await server.submit(chain(8, middle="HardExit"), prompt_id="always")
    await server.submit(chain(9), prompt_id="after")
    once = await server.wait_done("once", timeout=90)
    always = await server.wait_done("always", timeout=90)
    after = await server.wait_done("after", timeout=90)
    assert once["outputs"] == {"3": {"text": ["7"]}} and once["status"]["status_str"] == "success"
    assert after["outputs"] == {"3": {"text": ["9"]}}
    error = always["status"]["messages"][-1][1]
    assert always["status"]["status_str"] == "error" and error["exception_type"] == "sdgraph.WorkerLost"
    assert "2 times" in error["exception_message"]
    assert sorted(await (await server.client.get("/history")).json()) == ["after", "always", "once"]


async def segfault_leaves_the_server_answering(make: Make, how: str = "signal 11") -> None:
    server = await make(1)
    await server.submit(chain(1, middle="Segfault"), prompt_id="segv")
    answers = []
    for _ in range(20):  # the server answers all the while its worker dies and is restarted
        resp = await server.client.get("/prompt")
        answers.append(resp.status)
        await asyncio.sleep(0.1)
    done = await server.wait_done("segv", timeout=90)
    error = done["status"]["messages"][-1][1]
    assert error["exception_type"] == "sdgraph.WorkerLost" and how in error["exception_message"], error
    assert set(answers) == {200}
    await server.submit(chain(2), prompt_id="next")
    assert (await server.wait_done("next", timeout=90))["outputs"] == {"3": {"text": ["2"]}}



def stored_files(root: Path) -> dict[str, bytes]:
    """The files under a directory, by their path relative to it."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


async def view(server: Harness, record: dict[str, str]) -> bytes:
    resp = await server.client.get("/view", params=record)
    assert resp.status == 200, (record, resp.status)
    return await resp.read()


async def outputs_reach_the_server(make: Make, tmp_path: Path) -> None:
    """A worker whose output directory is its own: the files arrive in the server's, counted after the files
    there, on /view by the time `executed` names them, and in the history; a cached rerun names the same ones."""
    home, private = tmp_path / "server", tmp_path / "worker"
    (home / "output" / "runs").mkdir(parents=True)
    (home / "output" / "runs" / "pic_00003_.txt").write_bytes(b"older")
    server = await make(1, base=home, worker_base=private)
    ws = await server.ws("saver")
    await server.submit(save_prompt(41, prefix="runs/pic", count=2), client_id="saver", prompt_id="save")
    frames = await receive_until_executing(ws, "save", "4", timeout=60)
    executed = next(d for t, d in frames if t == "executed" and d["node"] == "2")
    assert [await view(server, r) for r in executed["output"]["images"]] == [b"value 41 #0", b"value 41 #1"]
    done = await server.wait_done("save", timeout=60)
    expected = [{"filename": f"pic_0000{n}_.txt", "subfolder": "runs", "type": "output"} for n in (4, 5)]
    assert done["outputs"]["2"]["images"] == expected == executed["output"]["images"]
    assert stored_files(home / "output") == {"runs/pic_00003_.txt": b"older", "runs/pic_00004_.txt": b"value 41 #0",
                                             "runs/pic_00005_.txt": b"value 41 #1"}
    assert not (private / "output").exists() or not stored_files(private / "output")
    await server.submit(save_prompt(41, prefix="runs/pic", count=2), prompt_id="again")  # the worker's cache
    assert (await server.wait_done("again", timeout=60))["outputs"]["2"]["images"] == expected
    await server.submit(save_prompt(42, prefix="runs/pic"), prompt_id="next")
    assert (await server.wait_done("next", timeout=60))["outputs"]["2"]["images"] == [
        {"filename": "pic_00006_.txt", "subfolder": "runs", "type": "output"}]
    assert len(stored_files(home / "output")) == 4
    await ws.close()


async def a_retry_writes_the_same_files(make: Make, tmp_path: Path) -> None:
    """The worker dies after its save node's file reached the server: the retry stores no second copy."""
    home, private = tmp_path / "server", tmp_path / "worker"
    server = await make(2, base=home, worker_base=private)
    await server.submit(save_prompt(7, exit_after=True), prompt_id="retry")
    done = await server.wait_done("retry", timeout=90)
    assert done["status"]["status_str"] == "success", done["status"]
    assert (private / "exited-retry").exists()  # the first attempt died, after saving
    record = {"filename": "sdgraph_00001_.txt", "subfolder": "", "type": "output"}
    assert done["outputs"]["2"]["images"] == [record]
    assert stored_files(home / "output") == {"sdgraph_00001_.txt": b"value 7 #0"}  # no _00002_, no partial file
    outputs = server.state.worker.outputs
    assert (outputs.stored, outputs.reused) == (1, 1)  # the first attempt's file arrived; the retry's was the same
    assert await view(server, record) == b"value 7 #0"
