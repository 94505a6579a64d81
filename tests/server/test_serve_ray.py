"""`sdgraph serve --ray local --ray-workers 2` in a real process: it starts its own local Ray, lists both actors,
runs prompts on them, and stops cleanly; `--ray ADDRESS` joins a head started by `ray start`. Skipped without ray
(CI installs it)."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("ray")

from tests.server.nodes import chain  # noqa: E402
from tests.server.ray_head import RayHead  # noqa: E402
from tests.server.worker_nodes import save_prompt  # noqa: E402
from tests.server.test_subprocess import Process, free_port, processes  # noqa: E402, F401 - the fixture


def serve_on_ray(base: Path, processes: list[Process], address: str) -> tuple[Process, list[dict]]:
    """A server with two actors on Ray at `address`, once both have started: it, and its workers."""
    server = Process(base, free_port(), "--ray", address, "--ray-workers", "2")
    processes.append(server)
    server.wait_ready(timeout=120)

    def actors():
        workers = server.call("GET", "/system_stats")[1]["workers"]
        return len(workers) == 2 and all(w["alive"] for w in workers) and workers
    workers = server.wait(actors, timeout=120)
    assert {w["kind"] for w in workers} == {"ray"} and len({w["pid"] for w in workers}) == 2
    assert server.proc.pid not in {w["pid"] for w in workers}
    return server, workers


def test_serve_on_a_local_ray(tmp_path: Path, processes: list[Process]) -> None:
    server, _ = serve_on_ray(tmp_path / "base", processes, "local")
    for i in range(4):
        assert server.call("POST", "/prompt", {"prompt": chain(i, middle="Slow", seconds=0.3, steps=3),
                                               "prompt_id": f"r{i}"})[0] == 200
    history = server.wait(lambda: (h := server.call("GET", "/history")[1]) and len(h) == 4 and h, timeout=60)
    assert [history[f"r{i}"]["outputs"] for i in range(4)] == [{"3": {"text": [str(i)]}} for i in range(4)]
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0


@pytest.fixture
def ray_head() -> Iterator[RayHead]:
    head = RayHead(free_port())
    try:
        head.wait_ready()
        yield head
    finally:
        head.stop()
    assert not head.pids()


@pytest.mark.slow
def test_serve_joins_a_running_ray_cluster(tmp_path: Path, ray_head: RayHead, processes: list[Process]) -> None:
    """`sdgraph serve --ray ADDRESS` against `ray start --head`: actors on that cluster run the prompts, and a
    save node's file, written on the actor's side, is in the server's output directory. (The server, set up
    after the head, is stopped before it.)"""
    server, _ = serve_on_ray(tmp_path / "base", processes, ray_head.address)
    assert server.call("POST", "/prompt", {"prompt": save_prompt(3), "prompt_id": "joined"})[0] == 200
    done = server.wait(lambda: server.call("GET", "/history/joined")[1].get("joined"), timeout=60)
    assert done["outputs"]["2"] == {"images": [{"filename": "sdgraph_00001_.txt", "subfolder": "", "type": "output"}]}
    assert (tmp_path / "base" / "output" / "sdgraph_00001_.txt").read_bytes() == b"value 3 #0"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0
