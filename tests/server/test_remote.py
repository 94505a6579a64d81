"""The executor side of a remote worker, alone: its message stream, an interrupt sent just before the run."""
from __future__ import annotations

import json
from pathlib import Path

from sdgraph.server.remote import RemoteRunner
from tests.server.nodes import chain
from tests.server.worker_nodes import make_executor


def run(runner: RemoteRunner, prompt: dict, prompt_id: str) -> list[tuple]:
    messages: list[tuple] = []
    runner.run({"prompt_id": prompt_id, "prompt_json": json.dumps(prompt), "extra_data": {}}, messages.append)
    return messages


def test_the_stream_is_events_then_the_record_then_the_end(tmp_path: Path) -> None:
    messages = run(RemoteRunner(make_executor(tmp_path)), chain(4, middle="Previewer"), "p")
    kinds = [m[0] if m[0] != "event" else m[1] for m in messages]
    assert kinds[0] == "execution_start" and kinds[-3:] == ["record", "executing", "done"]
    assert kinds.count("preview") == 2
    previews = [m[2]["image"] for m in messages if m[0] == "event" and m[1] == "preview"]
    assert [fmt for fmt, _ in previews] == ["PNG", "JPEG"]  # the PIL image was encoded where it was made
    entry = json.loads(next(m[1] for m in messages if m[0] == "record"))
    assert entry["outputs"] == {"3": {"text": ["4"]}} and entry["status"]["status_str"] == "success"
    assert messages[-1][1]["status"] == "success"


def test_an_interrupt_sent_just_before_the_run_stops_it(tmp_path: Path) -> None:
    runner = RemoteRunner(make_executor(tmp_path))
    assert not runner.interrupt("later")  # not running yet: held for it
    messages = run(runner, chain(1, middle="Slow", seconds=5.0, steps=50), "later")
    assert messages[-1][1]["status"] == "interrupted"
    assert run(runner, chain(2), "next")[-1][1]["status"] == "success"  # held for that prompt only
    runner.interrupt("someone-else")
    assert run(runner, chain(3), "other")[-1][1]["status"] == "success"


def test_a_result_json_cannot_hold_ends_as_an_error(tmp_path: Path) -> None:
    messages = run(RemoteRunner(make_executor(tmp_path)), {"1": {"class_type": "Number", "inputs": {"value": 1}},
                   "2": {"class_type": "Unserialisable", "inputs": {"value": ["1", 0]}}}, "u")
    entry = json.loads(next(m[1] for m in messages if m[0] == "record"))
    assert entry["status"]["status_str"] == "error"
    assert "could not be recorded" in entry["status"]["messages"][-1][1]["exception_message"]
