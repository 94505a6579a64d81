"""The utility nodes give ComfyUI's answers: each case of tests/sd/utility_cases.py run through sdgraph's node equals
what ComfyUI's own node class gave for the same inputs (tests/sd/data/utility_references.npz, written by
tools/comfy_reference/make_utility_references.py from ComfyUI a125cd8 with kornia 0.9 and Pillow 13 on the CPU):
pixel for pixel, index for index, and byte for byte for the saved PNGs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import utility_cases
from conftest import call, make_ctx
from sdgraph.node import NodeOutput
from sdgraph.paths import Dirs
from sdgraph.runtime import RuntimeOptions, create_executor

REFERENCES = Path(__file__).parent / "data" / "utility_references.npz"
CASES = utility_cases.cases()


@pytest.fixture(scope="module")
def references() -> dict[str, np.ndarray]:
    with np.load(REFERENCES) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Any:
    return create_executor(RuntimeOptions(base_dir=tmp_path_factory.mktemp("home"), plugins=False)).registry


@pytest.fixture
def ctx(tmp_path):
    dirs = Dirs(base=tmp_path, extra_model_roots=[])
    for folder in (dirs.input, dirs.output, dirs.temp):
        folder.mkdir(parents=True)
    utility_cases.write_output_picture(dirs.output)
    return make_ctx(dirs, None)


def outputs(ctx, registry, class_type: str, inputs: dict[str, Any]) -> list[Any]:
    result = call(registry.get(class_type).cls, ctx, **inputs)
    if isinstance(result, NodeOutput):  # a saving node: the files it wrote
        return [(ctx.dirs.of_type(r["type"]) / r["subfolder"] / r["filename"]).read_bytes()
                for r in result.ui["images"]]
    return list(result)


def test_the_references_cover_every_case_and_say_how_they_were_made(references):
    names = {key.split(".")[0] for key in references if key != "_meta"}
    assert names == set(CASES)
    meta = json.loads(references["_meta"].tobytes())
    assert meta["comfyui_commit"].startswith("a125cd8") and meta["kornia"].startswith("0.9")


@pytest.mark.parametrize("name", sorted(CASES))
def test_sdgraph_gives_comfyuis_answer(ctx, registry, references, name):
    class_type, inputs = CASES[name]
    ours = utility_cases.flatten(outputs(ctx, registry, class_type, inputs), name)
    theirs = {key: value for key, value in references.items() if key.split(".")[0] == name}
    assert sorted(ours) == sorted(theirs)
    for key, value in ours.items():
        assert value.shape == theirs[key].shape, key
        assert np.array_equal(value, theirs[key]), f"{key}: differs by up to {np.abs(value - theirs[key]).max()}"
