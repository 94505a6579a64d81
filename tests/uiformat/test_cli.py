"""`sdgraph convert`, and run/validate/--set on UI files, on the toy nodes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sdgraph.cli import main
from tests.engine import toy_nodes
from tests.uiformat.builders import graph, node

SUB = "b0b0b0b0-0000-4000-8000-000000000001"


def toy_ui(left_mode: int = 0) -> dict:
    left = node(1, "Number", [2], outputs=["INT"], title="left", mode=left_mode)
    right = node(2, "Number", [3], outputs=["INT"])
    add = node(3, "Add", [0], inputs=[("a", "INT", 1), ("b", "INT", 2)], outputs=["INT"], title="sum")
    show = node(4, "Show", [""], inputs=[("value", "*", 3)])
    return graph([left, right, add, show], [[1, 1, 0, 3, 0, "INT"], [2, 2, 0, 3, 1, "INT"], [3, 3, 0, 4, 0, "INT"]])


@pytest.fixture
def base(tmp_path) -> Path:
    custom = tmp_path / "custom_nodes"
    custom.mkdir()
    shutil.copy(toy_nodes.__file__, custom / "toy.py")
    return tmp_path


def write(base: Path, data: dict, name: str = "ui.json") -> str:
    path = base / name
    path.write_text(json.dumps(data))
    return str(path)


def test_convert_prints_the_api_prompt_and_ui_goes_back(base, capsys):
    path = write(base, toy_ui())
    assert main(["convert", path, "--base-dir", str(base)]) == 0
    prompt = json.loads(capsys.readouterr().out)
    assert prompt["3"] == {"class_type": "Add", "inputs": {"bias": 0, "a": ["1", 0], "b": ["2", 0]},
                           "_meta": {"title": "sum"}}
    api_path = write(base, prompt, "api.json")
    assert main(["convert", api_path, "--ui", "--base-dir", str(base)]) == 0
    ui = json.loads(capsys.readouterr().out)
    assert {n["type"] for n in ui["nodes"]} == {"Number", "Add", "Show"}
    assert main(["convert", write(base, ui, "back.json"), "--base-dir", str(base)]) == 0
    back = json.loads(capsys.readouterr().out)
    assert {k: v["inputs"] for k, v in back.items()} == {k: v["inputs"] for k, v in prompt.items()}


def test_convert_reports_unknown_types_by_node(base, capsys):
    path = write(base, graph([node(7, "Mystery", [1], title="What", properties={"aux_id": "me/pack"})], []))
    assert main(["convert", path, "--base-dir", str(base)]) == 2
    assert "node 7 'What': unknown node type 'Mystery' (from the node pack 'me/pack'" in capsys.readouterr().err


def test_run_a_ui_file_with_set_on_a_title(base, capsys):
    path = write(base, toy_ui())
    code = main(["run", path, "--base-dir", str(base), "--json", "--set", "left.value=10"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    assert result["outputs"]["4"] == {"text": ["13"]}


def test_validation_errors_name_the_ui_node_and_the_muted_source(base, capsys):
    path = write(base, toy_ui(left_mode=2))
    assert main(["validate", path, "--base-dir", str(base), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    entry = report["node_errors"]["3"]
    assert entry["ui_node"] == {"ui_id": 3, "title": "sum", "path": ""}
    assert "muted node left (#1)" in entry["errors"][0]["ui_hint"]
    assert main(["validate", path, "--base-dir", str(base)]) == 2
    err = capsys.readouterr().err
    assert "node 3 'sum' in the UI file" in err and "muted node left (#1)" in err


def test_errors_inside_a_subgraph_name_its_path(base, capsys):
    inner = node(5, "Add", [0], inputs=[("a", "INT", 1), ("b", "INT", None)], outputs=["INT"], title="inner add")
    definition = {"id": SUB, "name": "S", "nodes": [inner], "inputs": [{"name": "a", "type": "INT"}],
                  "outputs": [{"name": "o", "type": "INT"}],
                  "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 5, "target_slot": 0,
                             "type": "INT"},
                            {"id": 2, "origin_id": 5, "origin_slot": 0, "target_id": -20, "target_slot": 0,
                             "type": "INT"}]}
    wf = graph([node(1, "Number", [2], outputs=["INT"]), node(9, SUB, [], inputs=[("a", "INT", 1)],
                                                              outputs=["INT"], title="Box"),
                node(4, "Show", [""], inputs=[("value", "*", 2)])],
               [[1, 1, 0, 9, 0, "INT"], [2, 9, 0, 4, 0, "INT"]], definitions={"subgraphs": [definition]})
    assert main(["validate", write(base, wf), "--base-dir", str(base), "--json"]) == 2
    entry = json.loads(capsys.readouterr().out)["node_errors"]["9:5"]
    assert entry["ui_node"] == {"ui_id": 5, "title": "inner add", "path": "Box (#9)"}


def test_a_core_node_sdgraph_lacks_converts_and_validation_names_it(base, capsys):
    wf = graph([node(1, "Number", [2], outputs=["INT"]),
                node(2, "ImageRGBToYUV", [], inputs=[("image", "IMAGE", 1)], outputs=["IMAGE"], title="Flip"),
                node(4, "Show", [""], inputs=[("value", "*", 2)])],
               [[1, 1, 0, 2, 0, "INT"], [2, 2, 0, 4, 0, "IMAGE"]])
    assert main(["validate", write(base, wf), "--base-dir", str(base), "--json"]) == 2
    entry = json.loads(capsys.readouterr().out)["node_errors"]["2"]
    assert entry["ui_node"]["title"] == "Flip"
    assert entry["errors"][0]["type"] == "missing_node_type"
    assert entry["errors"][0]["ui_hint"] == "a ComfyUI core node that sdgraph does not implement yet"


def test_set_on_a_primitive_node_title_sets_every_input_it_feeds(base, capsys):
    prim = node(9, "PrimitiveNode", [5, "fixed"], outputs=["INT"], title="shared")
    add = node(3, "Add", [0], inputs=[("a", "INT", 1), ("b", "INT", 2), ("bias", "INT", 3, "bias")],
               outputs=["INT"])
    wf = graph([prim, add, node(4, "Show", [""], inputs=[("value", "*", 4)])],
               [[1, 9, 0, 3, 0, "INT"], [2, 9, 0, 3, 1, "INT"], [3, 9, 0, 3, 2, "INT"], [4, 3, 0, 4, 0, "INT"]])
    path = write(base, wf)
    assert main(["run", path, "--base-dir", str(base), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"]["4"] == {"text": ["15"]}
    assert main(["run", path, "--base-dir", str(base), "--json", "--set", "shared.value=7"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"]["4"] == {"text": ["21"]}
    assert main(["run", path, "--base-dir", str(base), "--set", "nothing.value=7"]) == 2
    assert "no node with id, title or class 'nothing'" in capsys.readouterr().err
