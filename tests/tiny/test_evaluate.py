"""sdgraph.tiny.evaluate samples through sdgraph's own nodes and executor, and its figures mean something."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sdgraph.tiny import architecture as arch
from sdgraph.tiny import evaluate as ev

torch.set_num_threads(1)

FAST = ev.Settings(steps=6)


@pytest.fixture()
def executor(tmp_path: Path):
    return ev.make_executor(arch.MODELS_DIR, tmp_path)


def test_a_picture_is_a_prompt_run_by_the_executor(executor) -> None:
    data = ev.eval_set(2)
    first = ev.picture_prompt(data.captions[0], 0, FAST)
    assert first["sampler"]["class_type"] == "KSampler"
    assert first["sampler"]["inputs"]["scheduler"] == "ddim_uniform"
    picture, result = ev.run_picture(executor, first)
    assert {"checkpoint", "sampler", "decode", "capture"} <= set(result.executed)
    assert picture.shape == (arch.IMAGE_SIZE, arch.IMAGE_SIZE, 3) and picture.dtype == np.uint8
    loads = executor.services.models.stats.disk_loads

    _, again = ev.run_picture(executor, ev.picture_prompt(data.captions[1], 1, FAST))
    assert "sampler" in again.executed
    assert {"checkpoint", "negative"} <= set(again.cached)  # the model stays loaded between pictures
    assert executor.services.models.stats.disk_loads == loads


def test_pictures_depend_on_the_seed_only(executor, tmp_path: Path) -> None:
    caption = ev.eval_set(1).captions[0]
    pictures = ev.sample(executor, [caption, caption], [3, 4], FAST)
    assert pictures.shape == (2, arch.IMAGE_SIZE, arch.IMAGE_SIZE, 3) and pictures.dtype == np.uint8
    assert not np.array_equal(pictures[0], pictures[1])
    alone = ev.sample(ev.make_executor(arch.MODELS_DIR, tmp_path / "fresh"), [caption], [3], FAST)
    assert np.array_equal(alone[0], pictures[0])


def test_controlnet_and_lora_pictures_go_through_their_nodes(executor) -> None:
    data = ev.eval_set(1)
    hint = ev.write_control(executor, data.outlines[0], "outline.png")
    prompt = ev.picture_prompt(ev.controlnet_prompts(data)[0], 0, FAST, control_image=hint)
    _, result = ev.run_picture(executor, prompt)
    assert {"hint", "controlnet", "control", "sampler"} <= set(result.executed)
    assert prompt["control"]["class_type"] == "ControlNetApplyAdvanced"

    prompt = ev.picture_prompt(data.captions[0], 0, FAST, lora_strength=1.0)
    _, result = ev.run_picture(executor, prompt)
    assert prompt["lora"]["class_type"] == "LoraLoader" and "lora" in result.executed


def test_evaluate_a_handful_of_pictures(tmp_path: Path) -> None:
    result = ev.evaluate(arch.MODELS_DIR, 4, ev.Settings(steps=8), "cpu", tmp_path)
    assert result["settings"]["scheduler"] == "ddim_uniform"
    assert set(result["adherence"]) == {"shape", "colour", "background", "position", "size"}
    assert result["adherence"]["background"] >= 0.75
    assert result["controlnet_iou"] > 0.5  # the outline places the shape
    lora = result["lora"]
    assert lora["shape_pixels_strength_1"] < lora["shape_pixels_strength_0"]  # outlines cover fewer pixels
    assert (tmp_path / "txt2img.png").is_file() and (tmp_path / "controlnet.png").is_file()
    assert "ControlNet IoU" in ev.format_table(result)
