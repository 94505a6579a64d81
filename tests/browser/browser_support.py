"""Helpers shared by the editor's browser tests (kept out of conftest.py so that imports are unambiguous)."""
from __future__ import annotations

import base64
import json
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"


def get_json(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as res:
        return json.loads(res.read())


# The same node under sdgraph's and ComfyUI's names: the editor shows whichever the server lists first.
ALIASES = [("CLIPTextEncode", "TextEncode"), ("EmptyLatentImage", "EmptyLatent")]


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
        entry = self.page.locator(selector("data-palette-item", type_, "#palette")).first
        entry.scroll_into_view_if_needed()  # a long palette scrolls
        box = self.page.locator("#canvas").bounding_box()
        self.drag(entry, (box["x"] + x, box["y"] + y))

    def links(self) -> list[dict]:
        return self.page.evaluate("""() => [...document.querySelectorAll('svg.wires path[data-link-id]')]
            .map(p => ({from: p.dataset.from, to: p.dataset.to}))""")

    def stored(self):
        return self.page.evaluate("() => JSON.parse(localStorage.getItem('sdgraph.workflow'))")

    def drop_file(self, selector: str, data: bytes, name: str, mime: str):
        handle = self.page.evaluate_handle("""([b64, name, mime]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            return dt;
        }""", [base64.b64encode(data).decode(), name, mime])
        self.page.dispatch_event(selector, "drop", {"dataTransfer": handle})
