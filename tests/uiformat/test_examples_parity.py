"""Parity with ComfyUI's frontend on a corpus nobody here wrote: the pictures of comfyanonymous/ComfyUI_examples.

Each picture carries the UI workflow and the API prompt that ComfyUI's frontend (`graphToPrompt`) made from it at
the same moment. tests/uiformat/data/comfy_examples.jsonl.gz holds those two texts per picture (extracted by
tools/extract_comfy_examples.py; no picture is committed). For every pair whose nodes are all ComfyUI core nodes,
`ui_to_api(workflow)` must give ComfyUI's prompt: the same node ids, and per node the same class_type and inputs.

How the two are compared, decided case by case:
- `_meta` (the title) is ignored: it names a node, it does not change what runs; converter tests cover titles.
- A link is `[source id, output slot]`; ids compare as strings (the frontend writes them as strings).
- Numbers compare by value: `8` and `8.0` are the same JSON number to ComfyUI's server, which coerces widget
  values to the input's type (a widget stored 8 in widgets_values comes out as 8.0 from a FLOAT widget).
  Booleans are not numbers here: `true` never equals `1`.
- An input only ComfyUI's prompt has, that the node does not declare in ComfyUI's /object_info, is a
  frontend-only widget that some frontend versions serialised and the server ignores (LoadImage's upload button,
  `upload` or `choose file to upload` = "image"; SaveWEBM's `video-preview` = ""). Only the ones named in
  FRONTEND_ONLY_INPUTS are left out (any other missing input is a difference); the converter is right to drop
  them, since the current frontend does not send them and an API client never does.
- Everything else is a difference. A pair that differs must be in KNOWN_DIFFERENCES with its reason, and a pair
  listed there must still differ (the table is kept honest both ways).
"""
from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
CORPUS = DATA / "comfy_examples.jsonl.gz"
REQUIRED_SHARE = 0.95

# Widgets of ComfyUI's frontend that are not inputs of the node (the server drops them): (class_type, input name).
FRONTEND_ONLY_INPUTS = {
    ("LoadImage", "upload"): "the image upload button, serialised by some frontend versions as 'image'",
    ("LoadImage", "choose file to upload"): "the same upload button under its older label",
    ("SaveWEBM", "video-preview"): "the frontend's preview element of the saved video, serialised as ''",
}

# Pairs whose conversion differs from ComfyUI's prompt, with the reason (example name -> reason).
OLD_GROUP_IDS = ("ComfyUI's prompt comes from the first group-node frontend (early 2024), which gave a group's inner "
                 "nodes fresh numeric ids (60, 61, 62, 64, 66); today's frontend and sdgraph name them "
                 "'<group node id>:<index in the group>' (68:0 ... 68:5). Same nodes, inputs and links otherwise: "
                 "test_renamed_ids_are_the_only_difference checks it with the id map in RENAMED_IDS")
KNOWN_DIFFERENCES: dict[str, str] = {
    "stable_cascade/stable_cascade__inpaint_controlnet.png": OLD_GROUP_IDS,
}
# For differences that are only node ids: our id -> ComfyUI's id.
RENAMED_IDS: dict[str, dict[str, str]] = {
    "stable_cascade/stable_cascade__inpaint_controlnet.png": {"68:0": "62", "68:1": "66", "68:2": "64", "68:3": "61",
                                                              "68:5": "60"},
}
MEASURED = "105/106 = 99.1%"  # the share of core pairs that match, as last measured


ui_to_api = pytest.importorskip("sdgraph.uiformat").ui_to_api


def corpus() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    return lines[0], lines[1:]


def core_pairs() -> list[dict[str, Any]]:
    return [pair for pair in corpus()[1] if pair["core"]]


def _normal(value: Any) -> Any:
    if (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str | int)
            and isinstance(value[1], int) and not isinstance(value[1], bool)):
        return ("link", str(value[0]), value[1])
    if isinstance(value, bool):  # True == 1 in Python, not to ComfyUI's validation
        return ("boolean", value)
    return value


def compare(theirs: dict[str, Any], ours: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    """(differences, frontend-only inputs left out) between ComfyUI's prompt and ours."""
    differences, left_out = [], []
    for node_id in sorted(set(theirs) | set(ours), key=str):
        a, b = theirs.get(node_id), ours.get(node_id)
        if b is None:
            differences.append(f"{node_id}: only ComfyUI's prompt has {a.get('class_type')}")
            continue
        if a is None:
            differences.append(f"{node_id}: only ours has {b.get('class_type')}")
            continue
        cls = a.get("class_type")
        if cls != b.get("class_type"):
            differences.append(f"{node_id}: class_type {cls!r} != ours {b.get('class_type')!r}")
            continue
        mine = {k: _normal(v) for k, v in b.get("inputs", {}).items()}
        for name, value in a.get("inputs", {}).items():
            if name not in mine:
                if (cls, name) in FRONTEND_ONLY_INPUTS:
                    left_out.append((cls, name))
                else:
                    differences.append(f"{node_id}.{name} ({cls}): ComfyUI {value!r}, ours absent")
            elif _normal(value) != mine[name]:
                differences.append(f"{node_id}.{name} ({cls}): ComfyUI {value!r}, ours {b['inputs'][name]!r}")
        for name in set(mine) - set(a.get("inputs", {})):
            differences.append(f"{node_id}.{name} ({cls}): ours {b['inputs'][name]!r}, ComfyUI absent")
    return differences, left_out


@cache
def results() -> dict[str, tuple[list[str], list[tuple[str, str]]]]:
    out = {}
    for pair in core_pairs():
        try:
            ours = ui_to_api(json.loads(pair["workflow"]))
        except Exception as exc:  # noqa: BLE001 - a failure to convert is a difference like any other
            out[pair["name"]] = ([f"conversion failed: {type(exc).__name__}: {exc}"[:300]], [])
            continue
        out[pair["name"]] = compare(json.loads(pair["prompt"]), ours)
    return out


def report() -> str:
    lines = []
    for name, (differences, _) in sorted(results().items()):
        if differences:
            lines.append(f"{name}: {KNOWN_DIFFERENCES.get(name, 'NOT EXPLAINED')}")
            lines.extend(f"    {d}" for d in differences[:6])
    return "\n".join(lines)


def test_the_corpus_is_the_one_extracted():
    header, pairs = corpus()
    assert header["source"] == "comfyanonymous/ComfyUI_examples"
    assert len(pairs) == header["pairs"] >= 100
    assert len(core_pairs()) == header["core_pairs"] >= 100
    assert all(json.loads(p["workflow"]).get("nodes") is not None for p in pairs)


def test_share():
    matched = [name for name, (differences, _) in results().items() if not differences]
    share = len(matched) / len(results())
    assert share >= REQUIRED_SHARE, (f"(last measured {MEASURED}) {len(matched)}/{len(results())} = {share:.1%} "
                                     f"match\n{report()}")


def test_every_difference_is_explained_and_every_explanation_still_differs():
    differing = {name for name, (differences, _) in results().items() if differences}
    assert differing - set(KNOWN_DIFFERENCES) == set(), f"unexplained differences:\n{report()}"
    assert set(KNOWN_DIFFERENCES) - differing == set(), "these now match: drop them from KNOWN_DIFFERENCES"


def test_frontend_only_inputs_are_the_known_ones():
    seen = {item for _, left_out in results().values() for item in left_out}
    assert seen <= set(FRONTEND_ONLY_INPUTS), f"new frontend-only inputs: {seen - set(FRONTEND_ONLY_INPUTS)}"


def test_the_comparison_sees_a_difference():
    pair = next(p for p in core_pairs() if not results()[p["name"]][0])
    theirs = json.loads(pair["prompt"])
    ours = ui_to_api(json.loads(pair["workflow"]))
    node_id, node = next((k, v) for k, v in ours.items() if v["inputs"])
    name = next(iter(node["inputs"]))
    node["inputs"][name] = ["999", 0] if not isinstance(node["inputs"][name], list) else "changed"
    assert compare(theirs, ours)[0], "changing an input must make a difference"
    ours[node_id + "_extra"] = {"class_type": "X", "inputs": {}}
    assert any("only ours" in d for d in compare(theirs, ours)[0])


def renamed(prompt: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    def rename(value: Any) -> Any:
        if isinstance(_normal(value), tuple) and _normal(value)[0] == "link":
            return [ids.get(str(value[0]), str(value[0])), value[1]]
        return value

    return {ids.get(k, k): {**node, "inputs": {n: rename(v) for n, v in node.get("inputs", {}).items()}}
            for k, node in prompt.items()}


@pytest.mark.parametrize("name", sorted(RENAMED_IDS))
def test_renamed_ids_are_the_only_difference(name):
    pair = next(p for p in core_pairs() if p["name"] == name)
    ours = ui_to_api(json.loads(pair["workflow"]))
    theirs = json.loads(pair["prompt"])
    assert compare(theirs, ours)[0], "it differs as it is"
    assert compare(theirs, renamed(ours, RENAMED_IDS[name]))[0] == []


def test_count_templates_sorts_and_converts(tmp_path):
    """tools/count_templates.py (the templates figure): a UI-format core template converts, an API-format file is
    not counted as UI, a template with a node from a pack is set apart, a broken one is listed as failed."""
    import sys  # noqa: PLC0415

    sys.path[:0] = [str(Path(__file__).resolve().parents[2] / "tools")]
    try:
        from count_templates import count  # noqa: PLC0415
    finally:
        del sys.path[0]
    pair = next(p for p in core_pairs() if not results()[p["name"]][0])
    workflow = json.loads(pair["workflow"])
    (tmp_path / "core.json").write_text(pair["workflow"])
    (tmp_path / "api.json").write_text(pair["prompt"])
    (tmp_path / "pack.json").write_text(json.dumps({**workflow, "nodes": [*workflow["nodes"], {
        "id": 999, "type": "SomePackNode", "mode": 0, "inputs": [], "outputs": [], "widgets_values": []}]}))
    node = {"id": 1, "type": "sub-1", "mode": 0, "inputs": [], "outputs": []}  # a subgraph that holds itself
    broken = {"nodes": [node], "links": [], "version": 0.4, "definitions": {"subgraphs": [
        {"id": "sub-1", "nodes": [node], "links": [], "inputs": [], "outputs": []}]}}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    result = count([tmp_path])
    assert result["not_ui"] == ["api.json"]
    assert result["non_core"] == {"pack.json": ["SomePackNode"]}
    assert result["non_core_other_problems"] == {}  # only its unknown node is a problem
    assert result["core_ui"] == 2 and result["converted"] == ["core.json"]
    assert list(result["failed"]) == ["broken.json"]
