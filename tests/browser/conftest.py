"""Fixtures for the editor's end-to-end tests: a running server, Debian's headless Chromium, and a fresh page.

Server: `sdgraph serve` (python -m sdgraph.server) in a subprocess, with a fresh --base-dir each session.
SDGRAPH_BROWSER_SERVER=stub uses tests/browser/stub_server.py instead (fake nodes, no model), =URL uses a server that is already running.
Browser: /usr/bin/chromium (or $CHROMIUM), never a downloaded build.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser.browser_support import HERE, TXT2IMG, Page, get_json, require_nodes

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_command(port: int, base: Path) -> list[str]:
    choice = os.environ.get("SDGRAPH_BROWSER_SERVER", "")
    if choice == "stub":
        return [sys.executable, str(HERE / "stub_server.py"), str(port), str(base)]
    try:
        import sdgraph.server  # noqa: F401
    except ImportError:
        pytest.skip("sdgraph.server is not available (set SDGRAPH_BROWSER_SERVER=stub to test the editor alone)")
    # `python -m sdgraph.server` is `sdgraph serve`
    cmd = [sys.executable, "-m", "sdgraph.server", "--port", str(port), "--base-dir", str(base)]
    help_text = subprocess.run(cmd[:3] + ["--help"], capture_output=True, text=True).stdout
    if "--preview" in help_text:
        cmd.append("--preview")
    return cmd


@pytest.fixture(scope="session")
def server_base(server_process):
    """The server's --base-dir (models/, input/, output/), when this session started the server."""
    if server_process[1] is None:
        pytest.skip("the server's directory is unknown (SDGRAPH_BROWSER_SERVER is a URL)")
    return server_process[1]


@pytest.fixture(scope="session")
def server(server_process):
    """The base URL of a running server."""
    return server_process[0]


@pytest.fixture(scope="session")
def server_process(tmp_path_factory):
    choice = os.environ.get("SDGRAPH_BROWSER_SERVER", "")
    if choice.startswith("http"):
        yield choice.rstrip("/"), None
        return
    base = tmp_path_factory.mktemp("sdgraph-user")
    port = _free_port()
    log = open(base / "server.log", "w")
    proc = subprocess.Popen(_server_command(port, base), stdout=log, stderr=subprocess.STDOUT, cwd=HERE.parents[1])
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            get_json(f"{url}/object_info", timeout=5)
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                log.close()
                pytest.fail(f"the server did not start:\n{(base / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
    yield url, base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def object_info(server):
    return get_json(f"{server}/object_info")


@pytest.fixture(scope="session")
def model_ready(object_info):
    """Skip unless the diffusion nodes are installed and the server sees a checkpoint."""
    require_nodes(object_info, TXT2IMG)
    loader = object_info["CheckpointLoaderSimple"]
    choices = loader["input"]["required"]["ckpt_name"][0]
    if not choices:
        pytest.skip("the server lists no checkpoint (the tiny model sdgraph-tiny is missing)")
    return choices


# Module scope: Playwright's sync API keeps an event loop running in this thread while it is open, which
# would break the asyncio tests that run after the browser tests in the same session.
@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def editor(browser, server):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = Page(context.new_page(), server + "/")
    yield page.open()
    errors = page.errors
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
