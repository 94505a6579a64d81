"""Property-based fuzzing of /prompt, /view and /upload against a live server: no 5xx, the worker lives on,
and no file is written outside its directory. The number of cases tried is printed (SDGRAPH_FUZZ_EXAMPLES
scales them)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.nodes import make_executor
from tests.server.live import LiveServer
from tests.server.nodes import chain
from tests.server.test_security import SECRET, bomb_png, multipart, png_bytes

EXAMPLES = int(os.environ.get("SDGRAPH_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
COUNTS: dict[str, int] = {}

tricky = st.sampled_from(["..", ".", "/", "\\", "\x00", "%2e", "%00", "~", "a", "b.png", "..\\", "../", "//",
                          "\u202e", "\ud800", " ", "\n", ":", "C:", "*", "?", "ok.png", "[output]"])
path_text = st.lists(tricky | st.text(max_size=6), max_size=6).map("".join)
leaf = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=12))
anything = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
link = st.tuples(st.sampled_from(["1", "2", "3", "9", ""]), st.integers(-1, 3)).map(list)
node = st.fixed_dictionaries(
    {"class_type": st.sampled_from(["Number", "Add", "Show", "Fail", "OutOfMemory", "Previewer", "Exit", "Nope",
                                    ""]) | st.text(max_size=8)},
    optional={"inputs": st.dictionaries(st.sampled_from(["value", "a", "b", "message"]) | st.text(max_size=4),
                                        link | anything, max_size=4),
              "_meta": anything})
workflow = st.dictionaries(st.sampled_from(["1", "2", "3"]) | st.text(max_size=3), node | anything, max_size=5)
prompt_body = st.fixed_dictionaries(
    {"prompt": workflow},
    optional={"client_id": path_text | anything, "prompt_id": path_text | anything,
              "extra_data": anything, "number": anything, "front": anything}) | anything


@pytest.fixture(scope="module")
def live(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "secret.txt").write_bytes(SECRET)
    server = LiveServer(make_executor(root / "base"))
    (server.base / "output" / "ok.png").write_bytes(png_bytes())
    os.symlink(root / "secret.txt", server.base / "output" / "link.txt")
    os.symlink(root, server.base / "input" / "escape")
    yield server
    server.stop()
    line = f"server fuzz: {sum(COUNTS.values())} cases ({', '.join(f'{k} {v}' for k, v in COUNTS.items())})"
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)
    else:
        print(line)


def outside_snapshot(live: LiveServer) -> set[str]:
    root = live.base.parent
    return {str(p.relative_to(root)) for p in root.rglob("*") if live.base not in p.parents and p != live.base}


def stray_files(live: LiveServer) -> list[Path]:
    """Files in the base directory outside input/, output/, temp/ and user/."""
    allowed = [live.base / name for name in ("input", "output", "temp", "user")]
    return [p for p in live.base.rglob("*") if p.is_file() and not any(a in p.parents for a in allowed)]


def test_fuzz_prompt(live: LiveServer) -> None:
    @FUZZ
    @given(body=prompt_body, raw=st.booleans())
    def check(body, raw) -> None:
        COUNTS["prompt"] = COUNTS.get("prompt", 0) + 1
        data = json.dumps(body).encode()
        if raw:
            data = data[: len(data) // 2]  # truncated JSON
        status, reply = live.request("POST", "/prompt", data, {"Content-Type": "application/json"})
        assert status < 500, reply
        assert status in (200, 400), (status, reply)
        parsed = json.loads(reply)
        assert ("prompt_id" in parsed) if status == 200 else ("error" in parsed)

    check()
    live.post_json("/queue", {"clear": True})
    live.request("POST", "/interrupt")
    assert live.state.store.wait_idle(30)
    status, reply = live.post_json("/prompt", {"prompt": chain(42)})
    assert status == 200
    pid = json.loads(reply)["prompt_id"]
    assert live.state.store.wait_idle(30)
    _, history = live.request("GET", f"/history/{pid}")
    assert json.loads(history)[pid]["outputs"] == {"3": {"text": ["42"]}}
    assert live.state.worker.alive


def test_fuzz_view(live: LiveServer) -> None:
    @FUZZ
    @given(filename=path_text, subfolder=path_text | st.none(), kind=st.sampled_from(["output", "input", "temp",
                                                                                       "", "../output"]) | st.none(),
           preview=st.sampled_from(["webp;90", "jpeg;80", "png", "webp;", "bmp;1", ";"]) | st.text(max_size=6)
           | st.none(),
           channel=st.sampled_from(["rgb", "a", "rgba", "x"]) | st.none(), encode_path=st.booleans())
    def check(filename, subfolder, kind, preview, channel, encode_path) -> None:
        COUNTS["view"] = COUNTS.get("view", 0) + 1
        query = {"filename": filename, "subfolder": subfolder, "type": kind, "preview": preview, "channel": channel}
        query = {k: v for k, v in query.items() if v is not None}
        encoded = {k: v.encode("utf-8", "surrogatepass") for k, v in query.items()}
        target = "/view?" + urlencode(encoded)
        if encode_path:
            target = "/view/" + quote(filename.encode("utf-8", "surrogatepass"), safe="/%") + "?x=1"
        status, body = live.request("GET", target)
        assert status < 500, (target, body[:200])
        assert SECRET not in body, target

    check()


def test_fuzz_upload(live: LiveServer) -> None:
    before = outside_snapshot(live)
    png, bomb = png_bytes(), bomb_png(60_000, 60_000)

    @FUZZ
    @given(filename=path_text, fields=st.dictionaries(
        st.sampled_from(["subfolder", "type", "overwrite", "original_ref"]),
        path_text | st.sampled_from(["input", "temp", "output", "true", '{"filename": "ok.png", "type": "output"}']),
        max_size=4), content=st.sampled_from([png, bomb, b"", b"<svg/>"]) | st.binary(max_size=64),
        mask=st.booleans(), garbage=st.binary(max_size=40) | st.none())
    def check(filename, fields, content, mask, garbage) -> None:
        COUNTS["upload"] = COUNTS.get("upload", 0) + 1
        body, content_type = multipart(content, filename, **fields)
        if garbage is not None:
            cut = len(garbage) % max(1, len(body))
            body = body[:cut] + garbage + body[cut:]
        route = "/upload/mask" if mask else "/upload/image"
        status, reply = live.request("POST", route, body, {"Content-Type": content_type})
        assert status < 500, reply[:300]
        if status == 200:
            data = json.loads(reply)
            root = live.state.dirs.of_type(data["type"])
            stored = (root / data["subfolder"] / data["name"]).resolve()
            assert root.resolve() in stored.parents and stored.is_file()

    check()
    assert outside_snapshot(live) == before
    assert stray_files(live) == []
