"""A real `serve()` process: killed with SIGKILL mid-queue and restarted, it keeps its history and runs the rest."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.server.nodes import chain

ROOT = Path(__file__).resolve().parents[2]
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    def __init__(self, base: Path, port: int, *flags: str) -> None:
        self.port = port
        self.log = open(base.parent / f"serve-{port}-{time.monotonic_ns()}.log", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.server.serve_nodes", "--base-dir", str(base),
                                      "--port", str(port), *flags], cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.headers: dict[str, str] = {}

    def call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json", **self.headers})
        try:
            with OPENER.open(request, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.output()}")
            try:
                self.call("GET", "/prompt")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise AssertionError(f"server never answered:\n{self.output()}")

    def wait(self, condition, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture
def processes():
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def test_kill_mid_queue_then_restart(tmp_path: Path, processes: list[Process]) -> None:
    base, port = tmp_path / "base", free_port()
    first = Process(base, port)
    processes.append(first)
    first.wait_ready()
    assert first.call("POST", "/prompt", {"prompt": chain(1), "prompt_id": "early"})[0] == 200
    first.wait(lambda: "early" in first.call("GET", "/history")[1])
    slow = chain(2, middle="Slow", seconds=30.0, steps=300)
    assert first.call("POST", "/prompt", {"prompt": slow, "prompt_id": "slow"})[0] == 200
    for i in range(3):
        assert first.call("POST", "/prompt", {"prompt": chain(10 + i), "prompt_id": f"later{i}"})[0] == 200
    first.wait(lambda: [item[1] for item in first.call("GET", "/queue")[1]["queue_running"]] == ["slow"])
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)

    second = Process(base, port)
    processes.append(second)
    second.wait_ready()
    queue = second.call("GET", "/queue")[1]
    running_or_pending = [item[1] for item in queue["queue_running"] + queue["queue_pending"]]
    assert running_or_pending == ["slow", "later0", "later1", "later2"]
    assert list(second.call("GET", "/history")[1]) == ["early"]
    # The prompt that was running at the kill runs again; interrupt it to keep the test short.
    second.wait(lambda: [item[1] for item in second.call("GET", "/queue")[1]["queue_running"]] == ["slow"])
    assert second.call("POST", "/interrupt", {"prompt_id": "slow"})[1] == {"interrupted": True}
    history = second.wait(lambda: (h := second.call("GET", "/history")[1]) and len(h) == 5 and h)
    assert list(history)[0] == "early" and history["early"]["outputs"] == {"3": {"text": ["1"]}}
    assert history["slow"]["status"]["messages"][-1][0] == "execution_interrupted"
    assert history["later2"]["outputs"] == {"3": {"text": ["12"]}}
    # A clean stop (SIGTERM) ends the process promptly.
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(15) == 0


def test_token_flag_guards_the_process(tmp_path: Path, processes: list[Process]) -> None:
    process = Process(tmp_path / "base", free_port(), "--token", "s3cret-token-value")
    processes.append(process)
    process.wait_ready()
    assert "token=s3cret-token-value" in process.output()
    assert process.call("GET", "/queue")[0] == 401
    process.headers["Authorization"] = "Bearer s3cret-token-value"
    assert process.call("GET", "/queue")[0] == 200
