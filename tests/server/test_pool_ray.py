"""The Ray backend: executors in actors of a real local Ray (2 CPUs, 2 actors), over the shared backend suite.

Skipped when ray is not installed (`pip install sdgraph[ray]`; CI installs it)."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

ray = pytest.importorskip("ray")

from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from sdgraph.server import ServerConfig, create_app  # noqa: E402
from sdgraph.server.ray_backend import connect, ray_pool  # noqa: E402
from tests.server import backend_suite as suite  # noqa: E402
from tests.server.conftest import Harness  # noqa: E402
from tests.server.worker_nodes import add_models, make_executor  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    connect("local", num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[suite.Make]:
    clients: list[TestClient] = []
    made = 0

    async def factory(count: int, *, policy: str = "affinity", base: Path | None = None,
                      worker_base: Path | None = None) -> Harness:
        nonlocal made
        made += 1
        base = base or tmp_path / f"base{made}"
        worker_base = worker_base or base  # another: the workers' disk is not the server's
        for each in {base, worker_base}:
            add_models(each, "a.safetensors", "b.safetensors")
        backend = ray_pool(count, functools.partial(make_executor, worker_base), policy=policy)
        app = create_app(make_executor(base), ServerConfig(probe_torch=False), backend=backend)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        server = Harness(client, base)
        await suite.wait_workers(server, count)
        return server

    yield factory
    for client in clients:
        await client.close()


def ray_kill(server: Harness, name: str) -> None:
    slot = next(slot for slot in server.state.worker.slots if slot.name == name)
    ray.kill(slot.channel.actor)


async def test_two_actors_run_20_prompts_about_twice_as_fast(make: suite.Make) -> None:
    one, two = await suite.throughput(make)
    print(f"ray: 20 prompts of 0.4 s: 1 actor {one:.2f} s, 2 actors {two:.2f} s, {one / two:.2f}x")
    assert one / two > 1.5


async def test_affinity_loads_each_model_about_once_per_actor(make: suite.Make, tmp_path: Path) -> None:
    affine, per_model = await suite.affinity_loads(make, tmp_path / "affinity", "affinity")
    scattered, _ = await suite.affinity_loads(make, tmp_path / "random", "random")
    in_order, _ = await suite.affinity_loads(make, tmp_path / "fifo", "fifo")
    print(f"ray: 40 prompts alternating 2 models: {affine} loads with affinity {per_model}, "
          f"{scattered} routed at random, {in_order} in plain queue order")
    assert all(1 <= n <= 3 for n in per_model.values()) and affine <= 5
    assert scattered >= 12 and in_order >= 10


async def test_a_rare_model_is_not_starved(make: suite.Make, tmp_path: Path) -> None:
    place, seconds, total = await suite.rare_model_place(make, tmp_path / "rare")
    print(f"ray: the rare prompt (31st of 61) started {place + 1}th, done after {seconds:.2f} s of {total:.2f} s")
    assert place <= 30 + 8 + 3  # the bound of test_pool_subprocess's twin
    assert seconds < 0.85 * total


async def test_events_reach_the_right_client_in_order(make: suite.Make) -> None:
    await suite.events_to_the_right_client(make)


async def test_previews_stream_back(make: suite.Make) -> None:
    await suite.previews_arrive(make)


async def test_interrupt_reaches_the_actor(make: suite.Make) -> None:
    await suite.interrupt_reaches_the_worker(make)


async def test_ray_kill_mid_prompt_retries_on_the_other_actor(make: suite.Make) -> None:
    outcome = await suite.worker_killed_mid_prompt(make, ray_kill)
    assert outcome["history"]["victim"]["outputs"]


async def test_os_exit_inside_a_node(make: suite.Make) -> None:
    await suite.exit_inside_a_node(make)


async def test_a_segfaulting_node_leaves_the_server_answering(make: suite.Make) -> None:
    await suite.segfault_leaves_the_server_answering(make, how="the actor died")


async def test_system_stats_lists_every_actor(make: suite.Make) -> None:
    server = await make(2)
    workers = await suite.wait_workers(server, 2)
    assert [w["name"] for w in workers] == ["ray0", "ray1"]
    assert all(w["kind"] == "ray" and w["node"] and w["pid"] for w in workers)
    assert len({w["pid"] for w in workers}) == 2


async def test_saved_files_reach_the_server_s_storage(make: suite.Make, tmp_path: Path) -> None:
    await suite.outputs_reach_the_server(make, tmp_path)


async def test_a_retried_prompt_writes_the_same_files(make: suite.Make, tmp_path: Path) -> None:
    await suite.a_retry_writes_the_same_files(make, tmp_path)
