"""A ComfyUI pack's browser extension in the editor: served from its WEB_DIRECTORY, imported, its hooks run in
ComfyUI's order, its node-def edits show, it hears the pack's send_sync; a pack that failed is named."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from tests.browser.browser_support import HERE, Page, get_json
from tests.browser.conftest import _free_port

PACK = '''
from server import PromptServer


class Shout:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hello"})}}
    RETURN_TYPES = ("STRING",)
    FUNCTION = "go"
    CATEGORY = "toy"
    OUTPUT_NODE = True

    def go(self, text):
        PromptServer.instance.send_sync("toy.shout", {"text": text.upper()}, PromptServer.instance.client_id)
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {"ToyShout": Shout}
WEB_DIRECTORY = "./web"
'''

EXTENSION = '''
import { app } from '../../scripts/app.js';
import { api } from '../../scripts/api.js';
import { suffix } from './lib/suffix.js';

const toy = window.__toy = { calls: [], created: [], loaded: [], shouts: [] };
app.registerExtension({
  name: 'toy.hooks',
  async init() { toy.calls.push('init'); },
  async addCustomNodeDefs(defs) { toy.calls.push('addCustomNodeDefs:' + ('ToyShout' in defs)); },
  async beforeRegisterNodeDef(nodeType, nodeData, app) {
    if (nodeData.name !== 'ToyShout') return;
    toy.calls.push('beforeRegisterNodeDef:' + nodeType.comfyClass);
    nodeData.display_name = 'Toy Shout' + suffix;
    const original = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () { original?.apply(this, arguments); toy.created.push('proto:' + this.type); };
  },
  async registerCustomNodes() { toy.calls.push('registerCustomNodes'); },
  async setup(app) {
    toy.calls.push('setup:' + (app.graph !== null));
    api.addEventListener('toy.shout', e => toy.shouts.push(e.detail.text));
  },
  nodeCreated(node) { toy.created.push('hook:' + node.type); },
  loadedGraphNode(node) { toy.loaded.push(node.type); },
});
'''


@pytest.fixture(scope="module")
def pack_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("sdgraph-packs")
    pack = base / "custom_nodes" / "toy_web_pack"
    (pack / "web" / "lib").mkdir(parents=True)
    (pack / "__init__.py").write_text(textwrap.dedent(PACK))
    (pack / "web" / "toy.js").write_text(EXTENSION)
    (pack / "web" / "lib" / "suffix.js").write_text("export const suffix = ' (renamed by its extension)';\n")
    (pack / "web" / "needs_widgets.js").write_text("import { ComfyWidgets } from '../../scripts/widgets.js';\n")
    broken = base / "custom_nodes" / "toy_broken_pack"
    broken.mkdir()
    (broken / "__init__.py").write_text("import toy_missing_module_abc\n")
    port = _free_port()
    log = open(base / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sdgraph.server", "--port", str(port), "--base-dir", str(base)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=HERE.parents[1])
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            get_json(f"{url}/object_info", timeout=5)
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"the server did not start:\n{(base / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_a_packs_extension_runs_its_hooks_and_hears_its_messages(browser, pack_server):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    editor = Page(context.new_page(), pack_server + "/").open()
    page = editor.page
    toy = page.evaluate("window.__toy")
    assert toy["calls"] == ["init", "addCustomNodeDefs:true", "beforeRegisterNodeDef:ToyShout",
                            "registerCustomNodes", "setup:true"]
    failed = page.evaluate("async () => (await import('/scripts/app.js')).app.failedExtensions.map(f => f.url)")
    assert failed == ["/extensions/toy_web_pack/needs_widgets.js"]  # imports a ComfyUI module sdgraph lacks

    page.click("#btn-clear")
    page.fill("#palette-search", "Toy Shout")
    entry = page.locator('#palette [data-palette-item="ToyShout"]').first
    assert "renamed by its extension" in entry.inner_text()  # the edit to nodeData shows
    entry.click()
    node = editor.node("ToyShout")
    node.wait_for()
    created = page.evaluate("window.__toy.created")
    assert "hook:KSampler" in created  # every node, the default workflow's too
    assert [c for c in created if c.endswith(":ToyShout")] == ["proto:ToyShout", "hook:ToyShout"]
    node.locator('[data-widget="text"]').fill("quiet words")
    node.locator('[data-widget="text"]').press("Tab")
    page.click("#btn-queue")
    page.wait_for_function("() => window.__toy.shouts.length > 0", timeout=30_000)
    assert page.evaluate("window.__toy.shouts") == ["QUIET WORDS"]

    problems = page.locator("#pack-problems")
    assert "toy_broken_pack" in problems.inner_text()
    assert "toy_missing_module_abc" in problems.locator('[data-pack="custom_nodes/toy_broken_pack"]').inner_text()
    assert problems.locator('[data-extension="/extensions/toy_web_pack/needs_widgets.js"]').count() == 1
    errors = editor.errors
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
