"""load_any over every form of workflow file, and api_to_ui's layout."""
from __future__ import annotations

import json

import pytest

from sdgraph.uiformat import ConversionError, api_to_ui, is_ui_workflow, load_any, ui_to_api
from sdgraph.workflow import WorkflowFormatError
from tests.uiformat.builders import ckpt, encode, graph, node

UI = graph([ckpt(), {**encode(6, "a cat", 1), "title": "positive"}], [[1, 4, 1, 6, 0, "CLIP"]])
API = {"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m"}}}


def test_is_ui_workflow():
    assert is_ui_workflow(UI)
    assert is_ui_workflow({"workflow": UI})
    assert not is_ui_workflow(API)
    assert not is_ui_workflow({"prompt": API, "workflow": UI})  # the API prompt is what ran
    assert not is_ui_workflow([UI])


def test_load_any_converts_ui_json_and_keeps_layout_and_origin(tmp_path):
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(UI))
    workflow = load_any(path)
    assert workflow.nodes["6"].title == "positive"
    assert workflow.nodes["6"].inputs == {"text": "a cat", "clip": ["4", 1]}
    assert workflow.layout == UI
    assert workflow.origin["6"]["ui_id"] == 6


def test_load_any_reads_api_json_unchanged(tmp_path):
    path = tmp_path / "api.json"
    path.write_text(json.dumps(API))
    workflow = load_any(path)
    assert workflow.origin is None and workflow.nodes["4"].class_type == "CheckpointLoaderSimple"


def test_load_any_reads_a_png_with_a_workflow_chunk():
    pictures = pytest.importorskip("sdgraph.uiformat.pictures")
    png = _png({"workflow": json.dumps(UI)})
    assert pictures.read_picture_chunks(png)["workflow"]
    assert load_any(png).nodes["6"].inputs["clip"] == ["4", 1]
    both = load_any(_png({"prompt": json.dumps(API), "workflow": json.dumps(UI)}))
    assert set(both.nodes) == {"4"} and both.layout == UI


def test_load_any_refuses_bad_input_with_a_format_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(WorkflowFormatError, match="not valid JSON"):
        load_any(bad)
    with pytest.raises(ConversionError):
        load_any(graph([node(1, "Nope", [])], []))


def test_api_to_ui_round_trips_and_lays_out_columns_by_depth():
    prompt = ui_to_api(graph([ckpt(), encode(6, "a cat", 1),
                              node(3, "KSampler", [5, "fixed", 20, 7.0, "euler", "normal", 1.0],
                                   inputs=[("model", "MODEL", 2), ("positive", "CONDITIONING", 3)])],
                             [[1, 4, 1, 6, 0, "CLIP"], [2, 4, 0, 3, 0, "MODEL"], [3, 6, 0, 3, 1, "CONDITIONING"]]))
    prompt["12:3"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["4", 1]},
                      "_meta": {"title": "inner"}}
    ui = api_to_ui(prompt)
    by_type = {(n["type"], n.get("title")): n for n in ui["nodes"]}
    xs = {key: n["pos"][0] for key, n in by_type.items()}
    assert xs[("CheckpointLoaderSimple", None)] < xs[("CLIPTextEncode", None)] < xs[("KSampler", None)]
    assert xs[("CLIPTextEncode", None)] == xs[("CLIPTextEncode", "inner")]
    same_column = [n for n in ui["nodes"] if n["pos"][0] == xs[("CLIPTextEncode", None)]]
    assert len({n["pos"][1] for n in same_column}) == len(same_column)  # no two nodes on top of each other
    back = ui_to_api(ui)
    renamed = {str(by_type[("CLIPTextEncode", "inner")]["id"]): prompt.pop("12:3")}
    assert {k: (v["class_type"], v["inputs"]) for k, v in back.items()} == {
        k: (v["class_type"], v["inputs"]) for k, v in {**prompt, **renamed}.items()}


def _png(texts: dict[str, str]) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    head = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    text = b"".join(chunk(b"tEXt", k.encode() + b"\0" + v.encode("latin-1")) for k, v in texts.items())
    data = chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + head + text + data
