"""A real server process under faults: a node that kills the process, and a 100,000-node workflow."""
from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from pathlib import Path

import pytest

from tests.server.nodes import chain
from tests.server.test_subprocess import Process, free_port, processes  # noqa: F401 - the fixture

START_LIMIT = 3  # a supervisor's restarts, at most, for the test below


def test_a_prompt_that_kills_the_process_cannot_block_the_queue(tmp_path: Path, processes: list[Process]) -> None:
    base, port = tmp_path / "base", free_port()
    first = Process(base, port)
    processes.append(first)
    first.wait_ready()
    killer = chain(1, middle="HardExit")
    slow = chain(0, middle="Slow", seconds=1.0, steps=10)  # holds the worker while the others are queued
    assert first.call("POST", "/prompt", {"prompt": slow, "prompt_id": "first"})[0] == 200
    assert first.call("POST", "/prompt", {"prompt": killer, "prompt_id": "killer"})[0] == 200
    assert first.call("POST", "/prompt", {"prompt": chain(2), "prompt_id": "behind"})[0] == 200
    assert first.proc.wait(20) == 9  # the node ended the process
    # A supervisor restarts the server each time it dies: the killer is retried once, then failed.
    for start in range(2, START_LIMIT + 2):
        server = Process(base, port)
        processes.append(server)
        try:
            server.wait_ready()
            history = server.wait(lambda: (h := server.call("GET", "/history")[1]) and len(h) == 3 and h)
            break
        except AssertionError:
            assert server.proc.wait(20) == 9, server.output()
    else:
        raise AssertionError("the queue never got past the prompt that kills the process")
    assert start == 3  # one retry, then it was failed
    assert history["behind"]["outputs"] == {"3": {"text": ["2"]}}
    status = history["killer"]["status"]
    assert status["status_str"] == "error"
    assert "stopped while running this prompt, 2 times" in status["messages"][-1][1]["exception_message"]


def big_chain(count: int) -> dict:
    """Number -> Add -> Add -> ... -> Show: `count` nodes, each Add adding 0."""
    prompt = {"0": {"class_type": "Number", "inputs": {"value": 0}}}
    for i in range(1, count - 1):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": ["0", 0]}}
    prompt[str(count - 1)] = {"class_type": "Show", "inputs": {"value": [str(count - 2), 0]}}
    return prompt


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def test_a_100k_node_workflow_does_not_stall_other_requests(tmp_path: Path, processes: list[Process]) -> None:
    """Preparing and running a 100,000-node prompt (4.8 MB of JSON) happens off the event loop.

    GET /prompt (the queue's state) must stay fast; GET /queue lists the whole prompt in every answer, so it
    is bounded more loosely here, for a busy machine (measured: see issue 12's closing note)."""
    server = Process(tmp_path / "base", free_port(), "--max-body-mb", "64")
    processes.append(server)
    server.wait_ready()
    body = json.dumps({"prompt": big_chain(100_000), "prompt_id": "big"}).encode()
    latencies: dict[str, list[float]] = {"/prompt": [], "/queue": []}
    done = threading.Event()

    def poll() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        while not done.is_set():
            for path, seen in latencies.items():
                start = time.perf_counter()
                conn.request("GET", path)
                conn.getresponse().read()
                seen.append(time.perf_counter() - start)
                time.sleep(0.002)
        conn.close()

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        time.sleep(0.2)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        conn.request("POST", "/prompt", body=body, headers={"Content-Type": "application/json"})
        reply = conn.getresponse()
        assert reply.status == 200, reply.read()[:500]
        conn.close()
        history = server.wait(lambda: (h := server.call("GET", "/history/big")[1]) and h, timeout=120)
    finally:
        done.set()
        poller.join(20)
    assert history["big"]["outputs"] == {"99999": {"text": ["0"]}}
    for path, seen in latencies.items():
        print(f"GET {path} during a 100k-node prompt: {len(seen)} requests, "
              f"p50 {statistics.median(seen) * 1000:.1f} ms, p99 {percentile(seen, 0.99) * 1000:.1f} ms")
    assert len(latencies["/prompt"]) > 50
    # Bounds with room for a busy machine; validating on the event loop stalled every request for seconds.
    assert percentile(latencies["/prompt"], 0.99) < 0.100
    assert percentile(latencies["/queue"], 0.99) < 0.200
