"""Fixtures for the editor's end-to-end tests: a running server, Debian's headless Chromium, and a fresh page.

Server: `sdgraph serve` (python -m sdgraph.server) in a subprocess (a fresh --base-dir each session). SDGRAPH_BROWSER_SERVER=stub uses
tests/browser/stub_server.py instead (fake nodes, no model), =URL uses a server that is already running.
Browser: /usr/bin/chromium (or $CHROMIUM), never a downloaded build.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as res:
        return json.loads(res.read())


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
    loader = object_info.get("CheckpointLoaderSimple") or object_info["CheckpointLoader"]
    choices = loader["input"]["required"]["ckpt_name"][0]
    if not choices:
        pytest.skip("the server lists no checkpoint (the tiny model sdgraph-tiny is missing)")
    return choices


@pytest.fixture(scope="session")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


# The same node under sdgraph's and ComfyUI's names: the editor shows whichever the server lists first.
ALIASES = [("CheckpointLoaderSimple", "CheckpointLoader"), ("CLIPTextEncode", "TextEncode"),
           ("EmptyLatentImage", "EmptyLatent")]


def names(class_type: str) -> tuple[str, ...]:
    return next((group for group in ALIASES if class_type in group), (class_type,))


def selector(attr: str, class_type: str, within: str = "") -> str:
    return ", ".join(f'{within} [{attr}="{n}"]'.strip() for n in names(class_type))


TXT2IMG = ["CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"]


def require_nodes(object_info: dict, needed: list[str]):
    missing = [n for n in needed if not any(a in object_info for a in names(n))]
    if missing:
        pytest.skip(f"the server lacks the node classes {', '.join(missing)}")


class Page:
    """A page of the editor plus the helpers the tests share."""

    def __init__(self, page, url):
        self.page, self.url, self.errors = page, url, []
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def open(self):
        self.page.goto(self.url)
        self.page.wait_for_selector("body.ready", timeout=30000)
        return self

    def shot(self, name: str):
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def node(self, type_: str, nth: int = 0):
        return self.page.locator(selector("data-node-type", type_)).nth(nth)

    def node_id(self, type_: str, nth: int = 0) -> str:
        return self.node(type_, nth).get_attribute("data-node-id")

    def center(self, locator):
        box = locator.bounding_box()
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def drag(self, source, target_xy, steps: int = 8, before_release=None):
        mouse = self.page.mouse
        mouse.move(*self.center(source))
        mouse.down()
        mouse.move(*target_xy, steps=steps)
        if before_release:
            before_release()
        mouse.up()

    def wire(self, src_type, out_index, dst_type, input_name, src_nth=0, dst_nth=0, before_release=None):
        out = self.node(src_type, src_nth).locator(f'[data-socket="out"][data-index="{out_index}"]')
        inp = self.node(dst_type, dst_nth).locator(f'[data-socket="in"][data-name="{input_name}"]')
        self.drag(out, self.center(inp), before_release=before_release)

    def add_by_drag(self, type_: str, x: float, y: float):
        """Drag a palette entry onto the canvas; x, y are relative to the canvas's top-left corner."""
        self.page.fill("#palette-search", "")
        box = self.page.locator("#canvas").bounding_box()
        self.drag(self.page.locator(selector("data-palette-item", type_, "#palette")).first, (box["x"] + x, box["y"] + y))

    def links(self) -> list[dict]:
        return self.page.evaluate("""() => [...document.querySelectorAll('svg.wires path[data-link-id]')]
            .map(p => ({from: p.dataset.from, to: p.dataset.to}))""")

    def stored(self):
        return self.page.evaluate("() => JSON.parse(localStorage.getItem('sdgraph.workflow'))")

    def drop_file(self, selector: str, data: bytes, name: str, mime: str):
        import base64
        handle = self.page.evaluate_handle("""([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            return dt;
        }""", [base64.b64encode(data).decode(), name, mime])
        self.page.dispatch_event(selector, "drop", {"dataTransfer": handle})


@pytest.fixture
def editor(browser, server):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = Page(context.new_page(), server + "/")
    yield page.open()
    errors = page.errors
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
