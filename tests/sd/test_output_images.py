"""SaveAnimatedPNG, MaskPreview and LoadImageOutput (nodes/sd/output_images.py): an animated PNG round-trips its
frames, timing and workflow (in ComfyUI's `comf` chunks, which sdgraph's reader understands), a mask shows as its
grey levels, and a result loads back from the output folder by its `[output]` name."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from conftest import call, make_ctx
from sdgraph.limits import Limits, configure
from sdgraph.nodes.sd.output_images import LoadImageOutput, MaskPreview, SaveAnimatedPNG
from sdgraph.paths import Dirs
from sdgraph.runtime import RuntimeOptions, create_executor
from sdgraph.uiformat.pictures import read_picture_chunks
from sdgraph.workflow import load_workflow

PROMPT = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 3, "color": 0}},
          "2": {"class_type": "SaveAnimatedPNG", "inputs": {"images": ["1", 0], "filename_prefix": "anim",
                                                             "fps": 4.0, "compress_level": 4}}}
LAYOUT = {"nodes": [], "links": [], "version": 0.4}


@pytest.fixture
def ctx(tmp_path):  # no models needed
    dirs = Dirs(base=tmp_path, extra_model_roots=[])
    for folder in (dirs.input, dirs.output, dirs.temp):
        folder.mkdir(parents=True)
    return make_ctx(dirs, None)


def frames(count: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    return torch.rand(count, 8, 8, 3, generator=generator)


def png_chunks(path: Path) -> list[bytes]:
    data, offset, kinds = path.read_bytes(), 8, []
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        kinds.append(kind)
        offset += 12 + length
    return kinds


def test_an_animated_png_round_trips_its_frames_timing_and_workflow(ctx):
    images = frames()
    out = call(SaveAnimatedPNG, ctx, images=images, filename_prefix="anim", fps=4.0, compress_level=9,
               prompt=PROMPT, extra_pnginfo={"workflow": LAYOUT})
    assert out.ui == {"images": [{"filename": "anim_00001_.png", "subfolder": "", "type": "output"}],
                      "animated": [True]}
    path = ctx.dirs.output / "anim_00001_.png"
    with Image.open(path) as picture:
        assert picture.is_animated and picture.n_frames == 3
        decoded = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(picture)]
        assert picture.info["duration"] == 250  # 1000 / fps ms a frame
    expected = np.clip(255 * images.numpy(), 0, 255).astype(np.uint8)  # truncated, as ComfyUI writes pixels
    assert all(np.array_equal(frame, want) for frame, want in zip(decoded, expected))
    kinds = png_chunks(path)
    assert b"tEXt" not in kinds and kinds.count(b"comf") == 2
    assert kinds.index(b"comf") > kinds.index(b"IDAT")  # after the image data, where ComfyUI puts them
    texts = read_picture_chunks(path)
    assert json.loads(texts["prompt"]) == PROMPT and json.loads(texts["workflow"]) == LAYOUT
    loaded = load_workflow(path).to_api()  # the workflow loads back from the picture
    assert {k: (v["class_type"], v["inputs"]) for k, v in loaded.items()} == {
        k: (v["class_type"], v["inputs"]) for k, v in PROMPT.items()}


def test_animated_pngs_never_overwrite_and_go_in_subfolders(ctx):
    first = call(SaveAnimatedPNG, ctx, images=frames(2), filename_prefix="clips/walk", fps=6.0, compress_level=4)
    second = call(SaveAnimatedPNG, ctx, images=frames(1), filename_prefix="clips/walk", fps=6.0, compress_level=4)
    assert [r["images"][0]["filename"] for r in (first.ui, second.ui)] == ["walk_00001_.png", "walk_00002_.png"]
    assert first.ui["images"][0]["subfolder"] == "clips"
    with Image.open(ctx.dirs.output / "clips" / "walk_00002_.png") as still:
        assert np.array_equal(np.asarray(still.convert("RGB")), np.clip(255 * frames(1)[0].numpy(), 0, 255)
                              .astype(np.uint8))
    assert read_picture_chunks(ctx.dirs.output / "clips" / "walk_00001_.png") == {}  # no prompt, no chunks


def test_mask_preview_shows_the_grey_levels_in_the_temp_folder(ctx):
    mask = torch.tensor([[[0.0, 0.25], [0.5, 1.0]], [[1.0, 1.0], [0.0, 0.0]]])
    out = call(MaskPreview, ctx, mask=mask, prompt=PROMPT)
    records = out.ui["images"]
    assert len(records) == 2 and all(r["type"] == "temp" for r in records)
    first = np.asarray(Image.open(ctx.dirs.temp / records[0]["filename"]))
    assert first.shape == (2, 2, 3) and first[..., 0].tolist() == [[0, 63], [127, 255]]  # truncated
    assert np.array_equal(first[..., 0], first[..., 2])
    assert json.loads(read_picture_chunks(ctx.dirs.temp / records[0]["filename"])["prompt"]) == PROMPT
    single = call(MaskPreview, ctx, mask=mask[0]).ui["images"]  # one [H, W] mask
    assert len(single) == 1


def test_load_image_output_takes_output_names_newest_first(ctx):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[0, 0, 3] = 0  # one transparent pixel
    Image.fromarray(rgba).save(ctx.dirs.output / "b_older.png")
    Image.fromarray(rgba[..., :3]).save(ctx.dirs.output / "c_newer.png")
    (ctx.dirs.output / "notes.txt").write_text("not a picture")
    now = (ctx.dirs.output / "c_newer.png").stat().st_mtime
    os.utime(ctx.dirs.output / "b_older.png", (now - 10, now - 10))
    (spec,) = LoadImageOutput.inputs
    assert spec.current_choices(ctx.dirs) == ["c_newer.png [output]", "b_older.png [output]"]
    image, mask = call(LoadImageOutput, ctx, image="b_older.png [output]")
    assert image.shape == (1, 4, 6, 3) and torch.all(image[..., 0] == 200 / 255)
    assert mask[0, 0, 0] == 1 and mask.sum() == 1  # transparent = 1
    assert LoadImageOutput.validate_inputs(ctx.dirs, image="b_older.png [output]") is None
    problem = LoadImageOutput.validate_inputs(ctx.dirs, image="missing.png [output]")
    assert problem is not None and "missing.png" in problem
    assert "Invalid image file" in LoadImageOutput.validate_inputs(ctx.dirs, image="../escape.png [output]")
    unreadable = LoadImageOutput.validate_inputs(ctx.dirs, image="notes.txt [output]")
    assert unreadable is not None and "LoadImageOutput.image" in unreadable
    # as in ComfyUI, a name without an annotation is an input file
    Image.fromarray(rgba[..., :3] // 2).save(ctx.dirs.input / "b_older.png")
    plain, _ = call(LoadImageOutput, ctx, image="b_older.png")
    assert torch.all(plain[..., 0] == 100 / 255)
    before = LoadImageOutput.fingerprint(ctx.dirs, image="c_newer.png [output]")
    Image.fromarray(rgba[..., :3] // 4).save(ctx.dirs.output / "c_newer.png")
    assert LoadImageOutput.fingerprint(ctx.dirs, image="c_newer.png [output]") != before


def test_load_image_output_checks_the_budget_from_the_header(ctx):
    Image.new("RGB", (512, 512)).save(ctx.dirs.output / "big.png")
    configure(Limits(memory_bytes=10_000))
    try:
        problem = LoadImageOutput.validate_inputs(ctx.dirs, image="big.png [output]")
    finally:
        configure(Limits())
    assert problem is not None and "LoadImageOutput.image" in problem


def test_a_saved_result_loads_back_in_the_next_run_with_comfyuis_refresh_widget(tmp_path):
    executor = create_executor(RuntimeOptions(base_dir=tmp_path, plugins=False))
    saved = executor.run({"1": {"class_type": "EmptyImage",
                                "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0x4080C0}},
                          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "r"}}})
    assert saved.ok, saved.error
    name = saved.outputs["2"]["images"][0]["filename"] + " [output]"
    again = executor.run({"3": {"class_type": "LoadImageOutput", "inputs": {"image": name, "refresh": "refresh"}},
                          "4": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}},
                          "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "r"}}})
    assert again.ok, again.error
    first = np.asarray(Image.open(tmp_path / "output" / saved.outputs["2"]["images"][0]["filename"])).astype(int)
    back = np.asarray(Image.open(tmp_path / "output" / again.outputs["5"]["images"][0]["filename"])).astype(int)
    assert np.abs(first[0, 0] - [0x40, 0x80, 0xC0]).max() <= 1  # 8-bit truncation of x / 255
    assert np.abs(back - (255 - first)).max() <= 1  # the loaded picture, inverted
