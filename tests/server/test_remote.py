"""The executor side of a remote worker, alone: its message stream, an interrupt sent just before the run."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from sdgraph.server.remote import RemoteRunner
from tests.server.nodes import chain
from tests.server.worker_nodes import make_executor, save_prompt


def run(runner: RemoteRunner, prompt: dict, prompt_id: str) -> list[tuple]:
    messages: list[tuple] = []
    runner.run({"prompt_id": prompt_id, "prompt_json": json.dumps(prompt), "extra_data": {}}, messages.append)
    return messages


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[RemoteRunner]:
    made = RemoteRunner(make_executor(tmp_path))
    yield made
    made.close()
    assert not made.spool.root.exists()


def test_the_stream_is_events_then_the_record_then_the_end(runner: RemoteRunner) -> None:
    messages = run(runner, chain(4, middle="Previewer"), "p")
    kinds = [m[0] if m[0] != "event" else m[1] for m in messages]
    assert kinds[0] == "execution_start" and kinds[-3:] == ["record", "executing", "done"]
    assert kinds.count("preview") == 2
    previews = [m[2]["image"] for m in messages if m[0] == "event" and m[1] == "preview"]
    assert [fmt for fmt, _ in previews] == ["PNG", "JPEG"]  # the PIL image was encoded where it was made
    entry = json.loads(next(m[1] for m in messages if m[0] == "record"))
    assert entry["outputs"] == {"3": {"text": ["4"]}} and entry["status"]["status_str"] == "success"
    assert messages[-1][1]["status"] == "success"


def test_an_interrupt_sent_just_before_the_run_stops_it(runner: RemoteRunner) -> None:
    assert not runner.interrupt("later")  # not running yet: held for it
    messages = run(runner, chain(1, middle="Slow", seconds=5.0, steps=50), "later")
    assert messages[-1][1]["status"] == "interrupted"
    assert run(runner, chain(2), "next")[-1][1]["status"] == "success"  # held for that prompt only
    runner.interrupt("someone-else")
    assert run(runner, chain(3), "other")[-1][1]["status"] == "success"


def test_a_result_json_cannot_hold_ends_as_an_error(runner: RemoteRunner) -> None:
    messages = run(runner, {"1": {"class_type": "Number", "inputs": {"value": 1}},
                   "2": {"class_type": "Unserialisable", "inputs": {"value": ["1", 0]}}}, "u")
    entry = json.loads(next(m[1] for m in messages if m[0] == "record"))
    assert entry["status"]["status_str"] == "error"
    assert "could not be recorded" in entry["status"]["messages"][-1][1]["exception_message"]


def test_a_saved_file_goes_before_the_event_naming_it(runner: RemoteRunner) -> None:
    messages = run(runner, save_prompt(5, count=2), "s")
    kinds = [m[0] if m[0] != "event" else m[1] for m in messages]
    executed = kinds.index("executed")
    assert kinds[executed - 2:executed] == ["file", "file"] and kinds.count("file") == 2
    assert [(m[1]["filename"], m[2], m[3]) for m in messages if m[0] == "file"] == [
        ("sdgraph_00001_.txt", b"value 5 #0", True), ("sdgraph_00002_.txt", b"value 5 #1", True)]
    assert not (runner.executor.services.dirs.base / "output").exists()  # written in the spool only
