"""The editor and ComfyUI's UI format: files open through the server's converter and save in that format."""
from __future__ import annotations

import json
import os

from tests.browser.browser_support import get_json

SUBGRAPH = "5d6c3a1e-0000-4000-8000-00000000beef"


def sub_link(link_id, src, src_slot, dst, dst_slot, kind):
    return {"id": link_id, "origin_id": src, "origin_slot": src_slot, "target_id": dst, "target_slot": dst_slot,
            "type": kind}


def ui_file(ckpt_name: str, inner_type: str = "EmptyLatentImage") -> dict:
    """Loader #4 -> subgraph #10 "Blank picture" (EmptyLatentImage, its width exposed, -> VAEDecode) -> SaveImage #9."""
    latent = {"id": 1, "type": inner_type, "title": "Blank", "pos": [0, 0], "mode": 0,
              "inputs": [{"name": "width", "type": "INT", "link": 11, "widget": {"name": "width"}}],
              "outputs": [{"name": "LATENT", "type": "LATENT", "links": [12]}], "widgets_values": [64, 64, 1]}
    decode = {"id": 2, "type": "VAEDecode", "pos": [300, 0], "mode": 0,
              "inputs": [{"name": "samples", "type": "LATENT", "link": 12}, {"name": "vae", "type": "VAE", "link": 13}],
              "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [14]}]}
    definition = {"id": SUBGRAPH, "name": "Blank picture", "nodes": [latent, decode],
                  "inputs": [{"name": "vae", "type": "VAE"}, {"name": "width", "type": "INT"}],
                  "outputs": [{"name": "IMAGE", "type": "IMAGE"}],
                  "links": [sub_link(11, -10, 1, 1, 0, "INT"), sub_link(12, 1, 0, 2, 0, "LATENT"),
                            sub_link(13, -10, 0, 2, 1, "VAE"), sub_link(14, 2, 0, -20, 0, "IMAGE")]}
    loader = {"id": 4, "type": "CheckpointLoaderSimple", "pos": [30, 40], "mode": 0, "inputs": [],
              "outputs": [{"name": "MODEL", "type": "MODEL", "links": []}, {"name": "CLIP", "type": "CLIP", "links": []},
                          {"name": "VAE", "type": "VAE", "links": [1]}], "widgets_values": [ckpt_name]}
    box = {"id": 10, "type": SUBGRAPH, "title": "Blank picture", "pos": [420, 40], "mode": 0,
           "inputs": [{"name": "vae", "type": "VAE", "link": 1},
                      {"name": "width", "type": "INT", "link": None, "widget": {"name": "width"}}],
           "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}], "widgets_values": [48]}
    save = {"id": 9, "type": "SaveImage", "pos": [800, 40], "mode": 0,
            "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "outputs": [], "widgets_values": ["subgraph"]}
    return {"last_node_id": 10, "last_link_id": 2, "nodes": [loader, box, save],
            "links": [[1, 4, 2, 10, 0, "VAE"], [2, 10, 0, 9, 0, "IMAGE"]], "groups": [], "config": {}, "extra": {},
            "version": 0.4, "definitions": {"subgraphs": [definition]}}


def graph_shape(editor) -> tuple:
    page = editor.page
    types = page.locator(".node").evaluate_all("els => els.map(e => [e.dataset.nodeId, e.dataset.nodeType])")
    width = editor.node("EmptyLatentImage").locator('[data-widget="width"]').input_value()
    return sorted(t for _, t in types), len(editor.links()), width, sorted(i for i, _ in types)


def run_and_wait(editor, server, runs_before: int) -> dict:
    page = editor.page
    page.click("#btn-queue")
    page.wait_for_function("""() => [...document.querySelectorAll('[data-node-type="SaveImage"] .node-images img')]
        .some(img => img.complete && img.naturalWidth > 0)""", timeout=60_000)
    width = page.locator('[data-node-type="SaveImage"] .node-images img').first.evaluate("img => img.naturalWidth")
    if os.environ.get("SDGRAPH_BROWSER_SERVER") != "stub":  # the stub's pictures have a fixed size
        assert width == 48  # the width set on the subgraph's exposed widget
    history = get_json(f"{server}/history")
    assert len(history) == runs_before + 1
    return list(history.values())[-1]["prompt"][2]


def test_ui_file_with_a_subgraph_opens_runs_saves_and_reopens(editor, server, model_ready, tmp_path):
    page = editor.page
    ckpt = next(c for c in model_ready if "sdgraph-tiny" in c)
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(ui_file(ckpt)))
    runs = len(get_json(f"{server}/history"))
    page.click("#btn-clear")
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector(".toast:has-text('Opened sub.json')")
    loader_type = editor.node("CheckpointLoaderSimple").get_attribute("data-node-type")
    expected = sorted([loader_type, "EmptyLatentImage", "VAEDecode", "SaveImage"])
    # the subgraph is flattened by the server's converter: its insides get ComfyUI's outer:inner ids
    assert graph_shape(editor) == (expected, 3, "48", ["10:1", "10:2", "4", "9"])
    stored = {n["id"]: n for n in editor.stored()["nodes"]}
    assert stored["4"]["pos"] == [30, 40] and stored["9"]["pos"] == [800, 40]  # the file's layout is kept
    assert stored["10:1"]["title"] == "Blank"
    editor.shot("16-ui-subgraph-opened")

    prompt = run_and_wait(editor, server, runs)
    assert prompt["10:1"]["inputs"]["width"] == 48 and prompt["10:2"]["inputs"]["samples"] == ["10:1", 0]
    # the picture's workflow is ComfyUI's UI format, so ComfyUI opens it too
    carried = list(get_json(f"{server}/history").values())[-1]["prompt"][3]["extra_pnginfo"]["workflow"]
    assert {"nodes", "links", "last_node_id"} <= set(carried) and len(carried["links"]) == 3

    with page.expect_download() as download:
        page.click("#btn-save")
    saved = tmp_path / "saved.json"
    download.value.save_as(saved)
    data = json.loads(saved.read_text())
    assert {"nodes", "links", "last_node_id", "last_link_id", "version"} <= set(data)
    by_type = {n["type"]: n for n in data["nodes"]}
    assert by_type["EmptyLatentImage"]["widgets_values"] == [48, 64, 1]
    assert by_type[loader_type]["pos"] == [30, 40] and by_type["SaveImage"]["widgets_values"] == ["subgraph"]
    assert len(data["links"]) == data["last_link_id"] == 3 and data["last_node_id"] == 11

    page.click("#btn-clear")
    page.reload()
    page.wait_for_selector("body.ready")
    assert page.locator(".node").count() == 0
    page.set_input_files("#file-input", str(saved))
    page.wait_for_selector(".toast:has-text('Opened saved.json')")
    assert graph_shape(editor) == (expected, 3, "48", ["10", "11", "4", "9"])
    prompt = run_and_wait(editor, server, runs + 1)
    assert {v["class_type"] for v in prompt.values()} >= {"VAEDecode", "SaveImage"}
    assert any(v["inputs"].get("width") == 48 for v in prompt.values())
    editor.shot("17-ui-subgraph-reopened-and-run")


def test_conversion_problems_name_the_node(editor, tmp_path):
    page = editor.page
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(ui_file("any", inner_type="NoSuchNode")))
    count = page.locator(".node").count()
    page.set_input_files("#file-input", str(path))
    toast = page.locator(".toast.error", has_text="Could not open odd.json").inner_text()
    assert "#1 Blank" in toast and "NoSuchNode" in toast and "Blank picture" in toast
    assert page.locator(".node").count() == count  # the canvas is left as it was


def test_dropping_a_webp_with_a_ui_workflow_opens_it(editor, model_ready):
    """A WebP as ComfyUI writes it (EXIF `workflow:<json>`, `prompt:<json>`): the workflow wins, converted."""
    import io

    from PIL import Image

    from sdgraph.uiformat.pictures import picture_metadata
    page = editor.page
    ckpt = next(c for c in model_ready if "sdgraph-tiny" in c)
    buf = io.BytesIO()
    other = {"1": {"class_type": "SaveImage", "inputs": {}}}  # not what opens: the workflow is preferred
    Image.new("RGB", (8, 8)).save(buf, "WEBP", exif=picture_metadata(other, ui_file(ckpt), "webp"))
    page.click("#btn-clear")
    editor.drop_file("#canvas", buf.getvalue(), "ComfyUI_00001_.webp", "image/webp")
    page.wait_for_selector(".toast:has-text('Opened the workflow from ComfyUI_00001_.webp')")
    assert graph_shape(editor)[1:] == (3, "48", ["10:1", "10:2", "4", "9"])
