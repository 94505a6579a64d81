"""End-to-end tests of the browser editor in headless Chromium against a running server."""
from __future__ import annotations

import io
import json
import time
import urllib.parse
import urllib.request

import pytest

from conftest import get_json

RUN_TIMEOUT_MS = 240_000


def wait_image(editor, node_type: str, timeout=RUN_TIMEOUT_MS):
    editor.page.wait_for_function(
        """type => [...document.querySelectorAll(`[data-node-type="${type}"] .node-images img:not(.preview)`)]
            .some(img => img.complete && img.naturalWidth > 0)""", arg=node_type, timeout=timeout)


def test_build_txt2img_from_empty_canvas_and_run(editor, model_ready):
    page = editor.page
    page.click("#btn-clear")
    assert page.locator(".node").count() == 0
    editor.shot("01-empty-canvas")
    layout = [("CheckpointLoaderSimple", 10, 230), ("CLIPTextEncode", 290, 10), ("CLIPTextEncode", 290, 270),
              ("EmptyLatentImage", 290, 540), ("KSampler", 580, 120), ("VAEDecode", 880, 120), ("SaveImage", 1130, 120)]
    for type_, x, y in layout:
        editor.add_by_drag(type_, x, y)
    assert page.locator(".node").count() == 7
    # outputs of the checkpoint loader: MODEL 0, CLIP 1, VAE 2
    editor.wire("CheckpointLoaderSimple", 0, "KSampler", "model")
    editor.wire("CheckpointLoaderSimple", 1, "CLIPTextEncode", "clip", dst_nth=0)
    editor.wire("CheckpointLoaderSimple", 1, "CLIPTextEncode", "clip", dst_nth=1)
    editor.wire("CLIPTextEncode", 0, "KSampler", "positive", src_nth=0)
    editor.wire("CLIPTextEncode", 0, "KSampler", "negative", src_nth=1)
    editor.wire("EmptyLatentImage", 0, "KSampler", "latent_image")
    editor.wire("KSampler", 0, "VAEDecode", "samples")
    editor.wire("CheckpointLoaderSimple", 2, "VAEDecode", "vae")
    editor.wire("VAEDecode", 0, "SaveImage", "images")
    assert len(editor.links()) == 9
    editor.node("CLIPTextEncode", 0).locator("textarea").fill("a red apple on a wooden table")
    latent = editor.node("EmptyLatentImage")
    for name in ("width", "height"):
        latent.locator(f'[data-widget="{name}"]').fill("64")
        latent.locator(f'[data-widget="{name}"]').press("Tab")
    sampler = editor.node("KSampler")
    sampler.locator('[data-widget="steps"]').fill("8")
    sampler.locator('[data-widget="steps"]').press("Tab")
    seed_before = sampler.locator('[data-widget="seed"]').input_value()
    editor.shot("02-built-txt2img")
    page.click("#btn-queue")
    wait_image(editor, "SaveImage")
    page.wait_for_function("() => !document.querySelector('.node.running')", timeout=30_000)
    editor.shot("03-image-shown")
    assert not page.locator(".node.has-error").count()
    # the seed was randomized after the run (control_after_generate)
    assert sampler.locator('[data-widget="seed"]').input_value() != seed_before
    # the API prompt the editor sent is the one the server ran: the history holds it, with our settings
    history = get_json(f"{editor.url}history")
    prompt = next(iter(history.values()))["prompt"][2]
    by_type = {v["class_type"]: v for v in prompt.values()}
    assert by_type["EmptyLatentImage"]["inputs"]["width"] == 64
    assert by_type["KSampler"]["inputs"]["steps"] == 8
    # click to enlarge
    editor.node("SaveImage").locator(".node-images img").first.click()
    page.wait_for_selector("#lightbox img")
    editor.shot("04-image-enlarged")
    page.keyboard.press("Escape")
    page.click("#btn-panel")
    page.wait_for_selector("#history-list li[data-prompt-id] img")
    editor.shot("05-queue-and-history")


def test_incompatible_wire_is_refused(editor):
    page = editor.page
    sampler_id = editor.node_id("KSampler")
    before = editor.links()
    target = editor.node("KSampler").locator('[data-socket="in"][data-name="latent_image"]')

    def while_dragging():
        # an IMAGE wire: LATENT and MODEL inputs dim, the Save Image input lights up
        assert "no" in target.get_attribute("class")
        assert "ok" in editor.node("SaveImage").locator('[data-socket="in"][data-name="images"]').get_attribute("class")
        assert "dim" in editor.node("CheckpointLoaderSimple").get_attribute("class")
        editor.shot("06-dragging-incompatible-wire")

    editor.wire("VAEDecode", 0, "KSampler", "latent_image", before_release=while_dragging)
    assert editor.links() == before
    assert any(l["to"] == f"{sampler_id}:latent_image" for l in before)
    page.wait_for_selector(".toast.error:has-text('IMAGE cannot connect to LATENT')")
    assert not page.locator(".socket.no, .socket.ok, .node.dim").count()


def test_validation_error_shows_on_the_right_node(editor):
    page = editor.page
    sampler = editor.node("KSampler")
    sampler_id = sampler.get_attribute("data-node-id")
    # pull the model wire off the sampler and drop it on empty canvas: the link is removed
    box = page.locator("#canvas").bounding_box()
    socket = sampler.locator('[data-socket="in"][data-name="model"]')
    editor.drag(socket, (box["x"] + 40, box["y"] + box["height"] - 40))
    assert not any(l["to"] == f"{sampler_id}:model" for l in editor.links())
    page.keyboard.press("Control+Enter")
    page.wait_for_selector(f'[data-node-id="{sampler_id}"].has-error', timeout=15_000)
    assert page.locator(".node.has-error").count() == 1
    row = sampler.locator('[data-input="model"]')
    assert "input-error" in row.get_attribute("class")
    assert sampler.locator(".node-errors").inner_text().strip()
    page.wait_for_selector(".toast.error")
    editor.shot("07-validation-error")


def test_reload_keeps_the_workflow(editor):
    page = editor.page
    text = editor.node("CLIPTextEncode", 0).locator("textarea")
    text.fill("a lighthouse at dusk")
    text.press("Tab")
    # move a node by its title and add one from the search popup (double-click on the canvas)
    title = editor.node("VAEDecode").locator(".node-title")
    x, y = editor.center(title)
    editor.drag(title, (x + 60, y + 200))
    moved = page.evaluate("() => JSON.parse(localStorage.getItem('sdgraph.workflow')).nodes"
                          ".find(n => n.class_type === 'VAEDecode').pos")
    box = page.locator("#canvas").bounding_box()
    page.mouse.dblclick(box["x"] + 100, box["y"] + box["height"] - 150)
    page.keyboard.type("preview image")
    page.keyboard.press("Enter")
    count = page.locator(".node").count()
    links = editor.links()
    page.reload()
    page.wait_for_selector("body.ready")
    assert page.locator(".node").count() == count
    assert editor.node("PreviewImage").count() == 1
    assert editor.node("CLIPTextEncode", 0).locator("textarea").input_value() == "a lighthouse at dusk"
    assert sorted(map(json.dumps, editor.links())) == sorted(map(json.dumps, links))
    assert editor.stored()["nodes"][[n["class_type"] for n in editor.stored()["nodes"]].index("VAEDecode")]["pos"] == moved
    editor.shot("08-after-reload")


@pytest.fixture(scope="module")
def sdgraph_png(server, model_ready, browser):
    """A PNG that the server saved: the default workflow as the editor sends it, run through /prompt."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(server + "/")
    page.wait_for_selector("body.ready")
    workflow, prompt = page.evaluate("""async () => {
        const {Graph} = await import('./js/graph.js');
        const stored = JSON.parse(localStorage.getItem('sdgraph.workflow'));
        const g = new Graph(await (await fetch('object_info')).json());
        g.load(stored);
        return [g.serialize(), g.toApi()];
    }""")
    context.close()
    body = json.dumps({"prompt": prompt, "client_id": "browser-test",
                       "extra_data": {"extra_pnginfo": {"workflow": workflow}}}).encode()
    req = urllib.request.Request(f"{server}/prompt", data=body, headers={"Content-Type": "application/json"})
    prompt_id = json.loads(urllib.request.urlopen(req, timeout=30).read())["prompt_id"]
    deadline = time.time() + RUN_TIMEOUT_MS / 1000
    while time.time() < deadline:
        entry = get_json(f"{server}/history").get(prompt_id)
        if entry and entry.get("outputs"):
            image = next(o["images"][0] for o in entry["outputs"].values() if o.get("images"))
            query = urllib.parse.urlencode({k: image.get(k, "") for k in ("filename", "subfolder", "type")})
            return workflow, urllib.request.urlopen(f"{server}/view?{query}", timeout=30).read()
        time.sleep(0.5)
    pytest.fail("the server did not finish the default workflow in time")


def test_dropping_an_sdgraph_png_restores_the_graph(editor, sdgraph_png):
    workflow, png = sdgraph_png
    page = editor.page
    page.click("#btn-clear")
    assert page.locator(".node").count() == 0
    editor.drop_file("#canvas", png, "sdgraph_00001_.png", "image/png")
    page.wait_for_selector(".toast:has-text('Opened the workflow')")
    types = sorted(page.locator(".node").evaluate_all("els => els.map(e => e.dataset.nodeType)"))
    assert types == sorted(n["class_type"] for n in workflow["nodes"])
    assert len(editor.links()) == len(workflow["links"])
    editor.shot("09-restored-from-png")


def test_dropping_an_api_only_png_lays_out_the_graph(editor):
    """A PNG with only the API-format prompt (as other tools write it) opens with an automatic layout."""
    from PIL import Image, PngImagePlugin
    page = editor.page
    prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdgraph-tiny"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    meta = PngImagePlugin.PngInfo()
    meta.add_text("prompt", json.dumps(prompt))
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=meta)
    editor.drop_file("#canvas", buf.getvalue(), "other.png", "image/png")
    page.wait_for_selector('[data-node-id="9"][data-node-type="PreviewImage"]')
    assert page.locator(".node").count() == 5
    assert len(editor.links()) == 4
    assert editor.node("CLIPTextEncode").locator("textarea").input_value() == "a castle"
    # laid out left to right by depth, and no two nodes overlap
    boxes = [page.locator(f'[data-node-id="{i}"]').bounding_box() for i in ("4", "8", "9")]
    assert boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]
    all_boxes = page.locator(".node").evaluate_all("els => els.map(e => e.getBoundingClientRect().toJSON())")
    for i, a in enumerate(all_boxes):
        for b in all_boxes[i + 1:]:
            assert (a["right"] <= b["left"] or b["right"] <= a["left"] or a["bottom"] <= b["top"] or b["bottom"] <= a["top"])
    editor.shot("10-api-png-auto-layout")
