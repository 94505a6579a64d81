"""Sturdy under hostile or broken clients: connection limits, the start order, WebSocket back-pressure,
filesystem errors on client paths, and secrets. Real sockets against real servers (mostly subprocesses)."""
from __future__ import annotations

import asyncio
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sdgraph.cli_serve import start_serving
from sdgraph.server import ServerConfig, create_app
from sdgraph.server.state import STATE
from tests.server.nodes import chain, make_executor
from tests.server.rawws import RawWebSocket
from tests.server.test_security import png_bytes, upload
from tests.server.test_subprocess import ROOT, Process, free_port


class LimitedProcess(Process):
    """`serve()` in a subprocess whose open-file soft limit starts at `soft_files` (as on many desktops)."""

    def __init__(self, base: Path, port: int, *flags: str, soft_files: int = 256) -> None:
        self.port = port
        self.log = open(base.parent / f"serve-{port}-{time.monotonic_ns()}.log", "w+")
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

        def lower_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft_files, hard))

        self.proc = subprocess.Popen([sys.executable, "-m", "tests.server.serve_nodes", "--base-dir", str(base),
                                      "--port", str(port), *flags], cwd=ROOT,
                                     stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=lower_limit)
        self.headers: dict[str, str] = {}


@pytest.fixture
def serve(tmp_path: Path):
    started: list[Process] = []

    def start(*flags: str, soft_files: int = 256) -> Process:
        process = LimitedProcess(tmp_path / f"base{len(started)}", free_port(), *flags, soft_files=soft_files)
        started.append(process)
        process.wait_ready()
        return process

    yield start
    for process in started:
        process.stop()


def open_idle(port: int, count: int) -> list[socket.socket]:
    """`count` connections: half send nothing, half a partial request line."""
    sockets = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            sock.sendall(b"GET /que")
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket) -> bool:
    poller = select.poll()  # not select(): with 1,000 sockets open their descriptors may pass FD_SETSIZE
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def count_closed(sockets: list[socket.socket], want: int, timeout: float) -> int:
    closed: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(closed) < want and time.monotonic() < deadline:
        closed.update(i for i, sock in enumerate(sockets) if i not in closed and closed_by_server(sock))
        time.sleep(0.05)
    return len(closed)


def timed_get(process: Process, path: str = "/queue") -> float:
    start = time.perf_counter()
    status, _ = process.call("GET", path)
    assert status == 200
    return time.perf_counter() - start


# ---- start order ----------------------------------------------------------------------------------------------


async def test_worker_starts_only_once_the_socket_listens(tmp_path: Path) -> None:
    port = free_port()
    config = ServerConfig(port=port, probe_torch=False)
    app = create_app(make_executor(tmp_path / "base"), config, start_worker=False)
    worker = app[STATE].worker
    listening_at_start: list[bool] = []
    original = worker.start

    def start_and_probe() -> None:
        with socket.socket() as probe:
            listening_at_start.append(probe.connect_ex(("127.0.0.1", port)) == 0)
        original()

    worker.start = start_and_probe  # type: ignore[method-assign]
    runner, sweep = await start_serving(app, config)
    try:
        assert listening_at_start == [True]
    finally:
        sweep.cancel()
        await runner.cleanup()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_cleanly_and_the_running_prompt_is_kept(signum: int, serve, tmp_path: Path) -> None:
    process = serve()
    slow = chain(2, middle="Slow", seconds=30.0, steps=300)
    assert process.call("POST", "/prompt", {"prompt": slow, "prompt_id": "slow"})[0] == 200
    process.wait(lambda: [item[1] for item in process.call("GET", "/queue")[1]["queue_running"]] == ["slow"])
    process.proc.send_signal(signum)
    assert process.proc.wait(15) == 0
    again = LimitedProcess(tmp_path / "base0", process.port)  # the same base directory
    try:
        again.wait_ready()
        queue = again.call("GET", "/queue")[1]
        assert [item[1] for item in queue["queue_running"] + queue["queue_pending"]] == ["slow"]
    finally:
        again.stop()


def test_a_port_in_use_is_a_clear_error(serve, tmp_path: Path) -> None:
    process = serve()
    second = subprocess.run([sys.executable, "-m", "tests.server.serve_nodes", "--base-dir", str(tmp_path / "b2"),
                             "--port", str(process.port)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1:{process.port}" in second.stderr


# ---- connection limits ----------------------------------------------------------------------------------------


def test_a_thousand_half_open_connections(serve) -> None:
    process = serve("--head-timeout", "3")
    opened = time.monotonic()
    sockets = open_idle(process.port, 1000)
    try:
        took = max(timed_get(process) for _ in range(5))
        assert took < 0.5, f"GET /queue took {took:.3f} s with 1,000 half-open connections"
        early = opened + 2.0 - time.monotonic()  # time left before any of them may be closed
        if early > 0:
            assert count_closed(sockets, 1, early) == 0
        assert count_closed(sockets, 1000, 8.0) == 1000  # all of them after it
        print(f"GET /queue with 1,000 half-open connections: {took * 1000:.1f} ms (slowest of 5)")
    finally:
        for sock in sockets:
            sock.close()


def test_over_the_cap_the_oldest_idle_connections_go(serve) -> None:
    process = serve("--max-connections", "100")
    sockets = open_idle(process.port, 300)
    try:
        assert count_closed(sockets[:200], 200, 5.0) == 200
        assert count_closed(sockets[200:], 1, 0.2) == 0  # the newest ones stay
        assert timed_get(process) < 0.5
    finally:
        for sock in sockets:
            sock.close()


def test_a_stalled_request_body_is_cut_off(serve) -> None:
    process = serve("--body-timeout", "1")
    with socket.create_connection(("127.0.0.1", process.port), timeout=5) as sock:
        sock.sendall(f"POST /prompt HTTP/1.1\r\nHost: 127.0.0.1:{process.port}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: 1000\r\n\r\n{{\"prompt\":".encode())
        assert count_closed([sock], 1, 0.5) == 0
        assert count_closed([sock], 1, 4.0) == 1
    assert timed_get(process) < 0.5


# ---- WebSocket back-pressure ----------------------------------------------------------------------------------


PAD = "n" * 150  # long node ids make every event frame ~360 bytes: 20,000 of them overflow the kernel's buffers


def node_id(i: int) -> str:
    return f"{PAD}{i}"


def long_chain(length: int) -> dict:
    """Number -> Add -> Add -> ... -> Show: `length` nodes, each runs in microseconds."""
    prompt: dict = {node_id(1): {"class_type": "Number", "inputs": {"value": 1}}}
    for i in range(2, length):
        prompt[node_id(i)] = {"class_type": "Add", "inputs": {"a": [node_id(i - 1), 0], "b": [node_id(1), 0]}}
    prompt[node_id(length)] = {"class_type": "Show", "inputs": {"value": [node_id(length - 1), 0]}}
    return prompt


def read_events(ws: RawWebSocket, prompt_id: str) -> list[tuple[str, dict]]:
    """Text frames up to this prompt's closing `executing: null`."""
    events: list[tuple[str, dict]] = []
    while True:
        opcode, payload = ws.receive()
        if opcode != 1:
            continue
        frame = json.loads(payload)
        events.append((frame["type"], frame["data"]))
        data = frame["data"]
        if frame["type"] == "executing" and data["node"] is None and data["prompt_id"] == prompt_id:
            return events


def test_a_reading_client_gets_every_event_of_a_20000_node_chain(serve) -> None:
    process = serve()
    length = 20000

    ws = RawWebSocket(process.port, "reader", receive_buffer=4096)
    try:
        assert json.loads(ws.receive()[1])["data"]["sid"] == "reader"
        body = {"prompt": long_chain(length), "prompt_id": "long", "client_id": "reader"}
        assert process.call("POST", "/prompt", body)[0] == 200
        process.wait(lambda: "long" in process.call("GET", "/history")[1], timeout=60)
        time.sleep(0.3)  # read only once every event is out: the server holds what the socket cannot
        events = read_events(ws, "long")
    finally:
        ws.close()
    executing = [d["node"] for t, d in events if t == "executing" and d.get("prompt_id") == "long"]
    assert executing[-1] is None
    assert sorted(executing[:-1]) == sorted(node_id(i) for i in range(1, length + 1))
    kinds = [t for t, d in events if t != "status"]
    assert kinds[0] == "execution_start" and "execution_success" in kinds
    assert [d["output"] for t, d in events if t == "executed"] == [{"text": [str(length - 1)]}]
    print(f"20,000-node chain: {len(events)} frames received, {len(executing)} executing events")


async def test_a_client_that_never_reads_is_dropped_within_its_budget(make_server, monkeypatch) -> None:
    from sdgraph.server import ws as ws_module  # noqa: PLC0415

    monkeypatch.setattr(ws_module, "OUTBOX_BYTES", 256 * 1024)
    server = await make_server()
    sleeper = await asyncio.to_thread(RawWebSocket, server.client.port, "sleeper", receive_buffer=4096)
    try:
        hub = server.state.hub
        await server.submit(long_chain(20000), prompt_id="burst", client_id="sleeper")
        await server.wait_done("burst", timeout=60)
        for _ in range(100):
            if "sleeper" not in hub.clients:
                break
            assert hub.clients["sleeper"].outbox.size <= 256 * 1024
            await asyncio.sleep(0.05)
        assert "sleeper" not in hub.clients
        assert (await server.client.get("/queue")).status == 200
    finally:
        sleeper.close()


def test_outbox_supersedes_by_key_and_bounds_bytes() -> None:
    from sdgraph.server.outbox import FRAME_OVERHEAD, Outbox  # noqa: PLC0415
    from sdgraph.server.ws import frame_key, text_frame  # noqa: PLC0415

    keeping_up = Outbox(limit_bytes=1 << 20)
    for i in range(3):
        keeping_up.put(text_frame("progress", {"value": i, "node": "1"}), ("progress", None, "1"))
    assert len(keeping_up) == 3  # a client that keeps up gets every step
    box = Outbox(limit_bytes=10 * (100 + FRAME_OVERHEAD), lag_bytes=0)
    frames = [text_frame("executing", {"node": "1", "prompt_id": "p"})]
    frames += [text_frame("progress", {"value": i, "max": 9, "node": "1", "prompt_id": "p"}) for i in range(10)]
    frames += [text_frame("progress", {"value": 1, "max": 9, "node": "2", "prompt_id": "p"}), b"\x00" * 10,
               b"\x01" * 10, text_frame("executed", {"node": "1", "prompt_id": "p"})]
    for frame in frames:
        assert box.put(frame, frame_key(frame))
    out = []
    while (frame := box.get_nowait()) is not None:
        out.append(frame)
    assert [json.loads(f)["type"] if isinstance(f, str) else f for f in out] == [
        "executing", "progress", "progress", b"\x01" * 10, "executed"]
    assert json.loads(out[1])["data"]["value"] == 9 and json.loads(out[2])["data"]["node"] == "2"
    assert box.size == 0
    big = "x" * 100
    assert all(box.put(big) for _ in range(10)) and not box.put(big)  # events are never superseded: full
    assert len(box) == 10


# ---- filesystem errors on client paths ------------------------------------------------------------------------

LONG = "a" * 300  # over the 255 bytes a path component may have
DEEP = "/".join(["d"] * 1500)


async def error_of(resp) -> tuple[int, str]:
    body = await resp.json()
    return resp.status, body["error"]["type"]


async def test_long_deep_and_looping_paths_on_view_are_4xx(server) -> None:
    inputs = server.base / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    os.symlink("loop", inputs / "loop")  # input/loop -> itself: ELOOP
    cases = [{"filename": LONG + ".png"}, {"filename": "a.png", "subfolder": LONG},
             {"filename": "a.png", "subfolder": DEEP}, {"filename": "loop", "type": "input"},
             {"filename": "a.png", "subfolder": "loop", "type": "input"},
             {"filename": "a.png", "subfolder": "loop", "type": "input", "preview": "webp"}]
    for params in cases:
        resp = await server.client.get("/view", params=params)
        status, kind = await error_of(resp)
        assert 400 <= status < 500, (params.get("subfolder", "")[:20], params["filename"][:20], status, kind)
    assert (await server.client.get("/queue")).status == 200


async def test_long_deep_and_looping_paths_on_upload_are_4xx(server) -> None:
    inputs = server.base / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    os.symlink("loop", inputs / "loop")
    cases = [("pic.png", {"subfolder": LONG}), ("pic.png", {"subfolder": DEEP}),
             ("pic.png", {"subfolder": "loop"}), ("pic.png", {"subfolder": "loop/x"}),
             ("b" * 250 + ".png", {}), ("pic.png", {"subfolder": "/".join(["e"] * 3000)})]
    for name, fields in cases:
        for route in ("/upload/image", "/upload/mask"):
            if route == "/upload/mask":
                fields = {**fields, "original_ref": json.dumps({"filename": "x.png", **fields})}
            status, kind = await error_of(await upload(server, png_bytes(), name, route, **fields))
            assert 400 <= status < 500, (route, name[:20], fields.get("subfolder", "")[:20], status, kind)
    assert (await upload(server, png_bytes(), "pic.png")).status == 200


async def test_permission_denied_is_403(server, monkeypatch) -> None:
    # As root no permission bit stops us, so the kernel's answer is stood in for where uploads write.
    from sdgraph.server import files  # noqa: PLC0415

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/somewhere/secret")

    monkeypatch.setattr(files, "_write_temp", denied)
    resp = await upload(server, png_bytes(), "pic.png")
    body = await resp.json()
    assert resp.status == 403 and body["error"]["type"] == "permission_denied"
    assert "/somewhere" not in json.dumps(body)  # server paths stay private


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs mounted at base/input (root only; skipped where mounting is not allowed)."""
    where = tmp_path / "base" / "input"
    where.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_a_full_disk_is_507_and_recovers(small_disk: Path, make_server) -> None:
    server = await make_server(base=small_disk.parent)
    filler = small_disk / "filler.bin"
    (small_disk.parent / "output").mkdir(exist_ok=True)
    (small_disk.parent / "output" / "orig.png").write_bytes(png_bytes((64, 64)))
    with open(filler, "wb", buffering=0) as out:
        with pytest.raises(OSError):  # fill it up to the last byte
            for _ in range(2048):
                out.write(b"\0" * 1024)
                out.flush()
    for route in ("/upload/image", "/upload/mask"):
        original = json.dumps({"filename": "orig.png", "type": "output"})
        fields = {"original_ref": original} if route == "/upload/mask" else {}
        resp = await upload(server, png_bytes((64, 64)), "pic.png", route, **fields)
        body = await resp.json()
        assert resp.status == 507 and body["error"]["type"] == "insufficient_storage", (route, body)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler.bin"]  # no partial file left behind
    filler.unlink()
    resp = await upload(server, png_bytes((64, 64)), "pic.png")
    assert resp.status == 200 and (await resp.json())["name"] == "pic.png"
    assert (small_disk / "pic.png").read_bytes() == png_bytes((64, 64))


async def test_an_unreadable_image_is_403_not_a_bad_image(server, monkeypatch) -> None:
    from PIL import Image  # noqa: PLC0415

    (server.base / "output" / "c.png").write_bytes(png_bytes())

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Image, "open", denied)
    status, kind = await error_of(await server.client.get("/view", params={"filename": "c.png", "preview": "webp"}))
    assert (status, kind) == (403, "permission_denied")


# ---- secrets ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--tok", "x"], ["--tok=x"], ["--toke", "x"], ["--max-conn", "5"]])
def test_serve_refuses_abbreviated_flags(argv: list[str], capsys) -> None:
    from sdgraph.cli import _parser  # noqa: PLC0415

    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["serve", *argv])
    assert info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
    assert _parser().parse_args(["serve", "--token", "x"]).token == "x"


@pytest.mark.parametrize("spelling", [["--tok=s3cr3t-value"], ["--tok", "s3cr3t-value"], ["--token=s3cr3t-value"],
                                      ["--token", "s3cr3t-value"], ["--t", "s3cr3t-value"]])
async def test_system_stats_never_shows_the_token(spelling: list[str], make_server, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["sdgraph", "serve", "--listen", "0.0.0.0", *spelling])
    server = await make_server(ServerConfig(listen="0.0.0.0", token="s3cr3t-value"))
    resp = await server.client.get("/system_stats", headers={"Authorization": "Bearer s3cr3t-value"})
    body = await resp.json()
    assert resp.status == 200 and "s3cr3t" not in json.dumps(body)
    assert body["system"]["argv"][:4] == ["sdgraph", "serve", "--listen", "0.0.0.0"]


async def test_editor_files_with_impossible_paths_are_4xx(server) -> None:
    for path in ("/" + LONG + ".js", "/" + DEEP + "/x.js", "/" + "/".join(["e"] * 3000) + "/x.js"):
        assert (await server.client.get(path)).status in (400, 404), path[:20]


def test_a_websocket_outlives_the_head_timeout(serve) -> None:
    process = serve("--head-timeout", "1")
    ws = RawWebSocket(process.port, "patient")
    try:
        ws.receive()  # the greeting status
        time.sleep(2.5)  # idle for longer than the head timeout
        assert process.call("POST", "/prompt", {"prompt": chain(3), "prompt_id": "late", "client_id": "patient"})[0] \
            == 200
        assert [d["node"] for t, d in read_events(ws, "late") if t == "executing"][-1] is None
    finally:
        ws.close()
