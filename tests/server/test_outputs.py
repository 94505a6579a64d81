"""Files from remote workers, both ends alone: the worker's spool (what it sends, and when) and the server's
content-addressed store (which name a file gets, and which names a run's records then carry)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from sdgraph.output_names import counted
from sdgraph.paths import Dirs
from sdgraph.server import spool as spool_module
from sdgraph.server.outputs import OutputStore
from sdgraph.server.spool import Spool
from tests.server.nodes import make_executor


def record(filename: str, subfolder: str = "", kind: str = "output") -> dict[str, str]:
    return {"filename": filename, "subfolder": subfolder, "type": kind}


def send_all(store: OutputStore, messages: list[tuple[Any, ...]]) -> None:
    for _, meta, chunk, last in messages:
        store.receive(meta, chunk, last)


@pytest.fixture
def worker(tmp_path: Path) -> tuple[Spool, Path]:
    executor = make_executor(tmp_path / "worker")
    spool = Spool(tmp_path / "spool")
    spool.attach(executor)
    return spool, executor.services.dirs.output


def test_counted_names() -> None:
    assert counted("ComfyUI_00001_.png") == ("ComfyUI", 5, "_.png")
    assert counted("ComfyUI_clip_l_00012_.safetensors") == ("ComfyUI_clip_l", 5, "_.safetensors")
    assert counted("clip_0003.mp4") == ("clip", 4, ".mp4")
    assert counted("ComfyUI_00001_.png").name(42) == "ComfyUI_00042_.png"
    assert counted("result.png") is None and counted("_00001_.png") is None


def test_the_spool_sends_what_an_event_names_then_the_rest(worker: tuple[Spool, Path]) -> None:
    spool, output = worker
    assert output == spool.root / "output"
    (output / "sub").mkdir()
    (output / "sub" / "a_00001_.png").write_bytes(b"A")
    (output / "b_00001_.png").write_bytes(b"B")  # another node's, perhaps still being written
    sent: list[tuple[Any, ...]] = []
    assert spool.ship(sent.append, {"images": [record("a_00001_.png", "sub")]}) == 1
    assert [(m[1]["subfolder"], m[1]["filename"], m[2], m[3]) for m in sent] == [("sub", "a_00001_.png", b"A", True)]
    assert spool.ship(sent.append) == 1 and sent[-1][1]["filename"] == "b_00001_.png"
    assert spool.ship(sent.append) == 0  # each file once
    assert (output / "b_00001_.png").read_bytes() == b""  # emptied, its name still taken


def test_large_files_go_in_chunks(worker: tuple[Spool, Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool_module, "CHUNK_BYTES", 10)
    spool, output = worker
    data = bytes(range(256)) * 3
    (output / "big_00001_.bin").write_bytes(data)
    sent: list[tuple[Any, ...]] = []
    spool.ship(sent.append)
    assert len(sent) == 77 and [m[3] for m in sent].count(True) == 1 and sent[-1][3]
    store = OutputStore(Dirs(base=tmp_path / "server"))
    send_all(store, sent)
    assert (tmp_path / "server" / "output" / "big_00001_.bin").read_bytes() == data


def test_the_server_counts_after_its_own_files_and_reuses_equal_content(tmp_path: Path) -> None:
    dirs = Dirs(base=tmp_path / "server")
    (dirs.output / "runs").mkdir(parents=True)
    (dirs.output / "runs" / "pic_00002_.png").write_bytes(b"older")
    store = OutputStore(dirs)

    def arrive(spool: str, name: str, data: bytes) -> dict[str, Any]:
        store.receive({"spool": spool, "type": "output", "subfolder": "runs", "filename": name}, data, True)
        return store.resolve(spool, {"images": [record(name, "runs")], "text": ["kept"]})

    assert arrive("w1", "pic_00001_.png", b"one") == {"images": [record("pic_00003_.png", "runs")], "text": ["kept"]}
    assert arrive("w2", "pic_00001_.png", b"two")["images"] == [record("pic_00004_.png", "runs")]
    assert arrive("w3", "pic_00001_.png", b"one")["images"] == [record("pic_00003_.png", "runs")]  # a retry
    assert arrive("w3", "pic_00002_.png", b"older")["images"] == [record("pic_00002_.png", "runs")]
    assert arrive("w3", "other_00001_.png", b"one")["images"] == [record("other_00001_.png", "runs")]
    assert sorted(p.name for p in (dirs.output / "runs").iterdir()) == [
        "other_00001_.png", "pic_00002_.png", "pic_00003_.png", "pic_00004_.png"]
    assert (store.stored, store.reused) == (3, 2)
    assert store.resolve("w9", {"images": [record("pic_00001_.png", "runs")]})["images"] == [
        record("pic_00001_.png", "runs")]  # not a file this store received: left as it is


def test_a_name_without_a_counter_is_kept(tmp_path: Path) -> None:
    dirs = Dirs(base=tmp_path / "server")
    store = OutputStore(dirs)
    for data in (b"first", b"second"):
        store.receive({"spool": "w", "type": "temp", "subfolder": "", "filename": "latest.txt"}, data, True)
    assert (dirs.temp / "latest.txt").read_bytes() == b"second"  # as its node would have done in-process


@pytest.mark.parametrize("kind, subfolder, filename", [
    ("output", "../outside", "x_00001_.png"), ("output", "", "../x_00001_.png"), ("temp", "/etc", "x_00001_.png"),
    ("output", "", ".sdgraph-incoming-x"), ("input", "", "x_00001_.png")])
def test_a_file_that_would_leave_the_directory_is_refused(tmp_path: Path, kind: str, subfolder: str, filename: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    dirs = Dirs(base=tmp_path / "server")
    store = OutputStore(dirs)
    with caplog.at_level(logging.ERROR, "sdgraph.server"):
        store.receive({"spool": "w", "type": kind, "subfolder": subfolder, "filename": filename}, b"x", False)
        store.receive({"spool": "w", "type": kind, "subfolder": subfolder, "filename": filename}, b"y", True)
    assert "could not store" in caplog.text
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    assert store.stored == 0


def test_a_lost_worker_s_partial_file_is_dropped(tmp_path: Path) -> None:
    dirs = Dirs(base=tmp_path / "server")
    store = OutputStore(dirs)
    store.receive({"spool": "w", "type": "output", "subfolder": "", "filename": "x_00001_.png"}, b"half", False)
    assert len(list(dirs.output.iterdir())) == 1  # the part being received
    store.abandon("w")
    assert list(dirs.output.iterdir()) == []


def test_ray_gpus_per_actor() -> None:
    from sdgraph.server.ray_backend import actor_options

    assert actor_options(0.5) == {"num_gpus": 0.5, "num_cpus": 1}
    assert actor_options(0) == {"num_cpus": 1}
    with pytest.raises(ValueError, match="--ray-gpus"):
        actor_options(-1)
