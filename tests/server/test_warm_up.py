"""`sdgraph serve --warm-up WORKFLOW`: the files are queued ahead of every client's prompt, in the order given, and
warm the output cache for the clients' identical work; a file that cannot run queues nothing and says why."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdgraph.cli_serve import add_serve_arguments, queue_warm_ups
from tests.server.conftest import Factory
from tests.server.nodes import chain, gate


def write(tmp_path: Path, name: str, workflow: dict) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(workflow))
    return path


def test_the_flag_repeats() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--warm-up", "a.json", "--warm-up", "b.json"])
    assert args.warm_up == [Path("a.json"), Path("b.json")]
    assert parser.parse_args([]).warm_up == []


async def test_warm_ups_run_first_in_order_and_warm_the_cache(make_server: Factory, tmp_path: Path) -> None:
    server = await make_server()
    held = await server.submit(chain(7, middle="Gate", name="warm"))  # holds the worker while the queue fills
    await server.wait_running(held["prompt_id"])
    client = await server.submit(chain(2))
    first, second = write(tmp_path, "first.json", chain(1)), write(tmp_path, "second.json", chain(3))

    assert queue_warm_ups(server.client.server.app, [first, second])
    running, pending = server.state.store.snapshot()
    order = [item.prompt_id for item in pending]
    assert order[-1] == client["prompt_id"] and len(order) == 3
    assert order[0].startswith("warm-up-1-") and order[1].startswith("warm-up-2-")

    gate("warm").set()
    done = [await server.wait_done(prompt_id) for prompt_id in order]
    assert [entry["status"]["status_str"] for entry in done] == ["success"] * 3
    assert done[0]["outputs"]["3"] == {"text": ["1"]} and done[1]["outputs"]["3"] == {"text": ["3"]}
    assert done[0]["prompt"][3] == {"warm_up": True}

    again = await server.wait_done((await server.submit(chain(3)))["prompt_id"])
    cached = [data for kind, data in again["status"]["messages"] if kind == "execution_cached"]
    assert cached and set(cached[0]["nodes"]) == {"1", "3"}, "the warm-up's outputs serve the client's prompt"


@pytest.mark.parametrize("bad, said", [
    ({"1": {"class_type": "NoSuchNode", "inputs": {}}}, "NoSuchNode"),
    ({"1": {"class_type": "Number", "inputs": {"value": "seven"}}, "2": {"class_type": "Show",
                                                                       "inputs": {"value": ["1", 0]}}}, "node 1"),
    ({"nodes": [{"id": 5, "type": "NoSuchNode", "inputs": [], "outputs": [], "widgets_values": []}], "links": []},
     "NoSuchNode"),  # a UI-format file, refused by the converter
    (None, "No such file"),
])
async def test_a_warm_up_that_cannot_run_queues_nothing(make_server: Factory, tmp_path: Path, capsys, bad,
                                                        said) -> None:
    server = await make_server()
    good = write(tmp_path, "good.json", chain(1))
    path = write(tmp_path, "bad.json", bad) if bad is not None else tmp_path / "missing.json"
    assert not queue_warm_ups(server.client.server.app, [good, path])
    err = capsys.readouterr().err
    assert f"--warm-up {path}" in err and said in err, err
    assert server.state.store.remaining() == 0


async def test_a_full_queue_refuses_the_warm_ups(tmp_path: Path, capsys) -> None:
    from aiohttp import web

    from sdgraph.server import ServerConfig, create_app
    from tests.server.nodes import make_executor

    app: web.Application = create_app(make_executor(tmp_path / "base"), ServerConfig(probe_torch=False, max_queue=1),
                                      start_worker=False)
    paths = [write(tmp_path, "one.json", chain(1)), write(tmp_path, "two.json", chain(2))]
    assert not queue_warm_ups(app, paths)
    assert "cannot queue" in capsys.readouterr().err


def test_serve_refuses_to_start_on_a_bad_warm_up(tmp_path: Path, capsys) -> None:
    import argparse

    from sdgraph.cli_serve import serve
    from tests.server.nodes import make_executor

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    bad = write(tmp_path, "bad.json", {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    args = parser.parse_args(["--base-dir", str(tmp_path / "base"), "--port", "0", "--warm-up", str(bad)])
    assert serve(args, executor=make_executor(tmp_path / "base")) == 2
    assert "NoSuchNode" in capsys.readouterr().err
