"""`sdgraph serve --worker-processes N` in a real process: prompts run in children, which a node's crash does not
take the server down with, and which end with the server (a clean stop, or the server killed outright)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.server.nodes import chain
from tests.server.test_subprocess import Process, free_port, processes  # noqa: F401 - the fixture


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


def children(server: Process, count: int) -> list[dict]:
    def ready():
        workers = server.call("GET", "/system_stats")[1]["workers"]
        return len(workers) == count and all(w["alive"] for w in workers) and workers
    return server.wait(ready, timeout=60)


def test_serve_with_worker_processes_survives_a_crashing_node(tmp_path: Path, processes: list[Process]) -> None:
    server = Process(tmp_path / "base", free_port(), "--worker-processes", "2")
    processes.append(server)
    server.wait_ready()
    workers = children(server, 2)
    assert {w["kind"] for w in workers} == {"subprocess"} and server.proc.pid not in {w["pid"] for w in workers}
    assert server.call("POST", "/prompt", {"prompt": chain(1, middle="HardExit"), "prompt_id": "killer"})[0] == 200
    assert server.call("POST", "/prompt", {"prompt": chain(2), "prompt_id": "fine"})[0] == 200
    history = server.wait(lambda: (h := server.call("GET", "/history")[1]) and len(h) == 2 and h, timeout=60)
    assert history["fine"]["outputs"] == {"3": {"text": ["2"]}}
    assert history["killer"]["status"]["messages"][-1][1]["exception_type"] == "sdgraph.WorkerLost"
    assert server.proc.poll() is None  # the server itself never died
    pids = [w["pid"] for w in children(server, 2)]
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    assert wait_gone(pids)


def test_children_end_when_the_server_is_killed(tmp_path: Path, processes: list[Process]) -> None:
    server = Process(tmp_path / "base", free_port(), "--worker-processes", "1")
    processes.append(server)
    server.wait_ready()
    pids = [w["pid"] for w in children(server, 1)]
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    assert wait_gone(pids)  # their control pipe ends with the server


def test_ray_without_ray_installed_is_a_clear_error(tmp_path: Path, processes: list[Process]) -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        server = Process(tmp_path / "base", free_port(), "--ray", "local")
        processes.append(server)
        assert server.proc.wait(30) == 2 and "pip install 'sdgraph[ray]'" in server.output()
    else:
        import pytest

        pytest.skip("ray is installed here")
