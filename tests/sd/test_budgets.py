"""Resource budgets: every allocating node refuses, before allocating, what is over its budget; LoadImage's names."""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any
from unittest import mock

import pytest
import torch
from PIL import Image

from sdgraph.context import InterruptFlag, NodeContext, Services
from sdgraph.limits import (
    BudgetExceeded, Limits, add_limit_arguments, configure, current_limits, limits_from_args, machine_memory_bytes,
)
from sdgraph.nodes.sd import image as image_nodes
from sdgraph.nodes.sd import latent as latent_nodes
from sdgraph.nodes.sd import text_encoding
from sdgraph.nodes.sd.conditioning import TextEncode
from sdgraph.nodes.sd.sampling import KSampler, KSamplerAdvanced
from sdgraph.paths import Dirs
from sdgraph.plugins import build_registry
from sdgraph.validate import validate
from sdgraph.workflow import parse_workflow

from conftest import call

MIB = 1024 ** 2


def limited(dirs: Dirs, manager: Any = None, **limits: Any) -> NodeContext:
    return NodeContext(node_id="7", prompt_id="test", interrupt=InterruptFlag(),
                       services=Services(dirs=dirs, models=manager, limits=Limits(**limits)))


@pytest.fixture
def budget():
    """Install a process-wide budget (what validate_inputs reads) for one test, then put the old one back."""
    before = current_limits()
    yield lambda **kw: configure(Limits(**kw))
    configure(before)


@pytest.fixture(scope="module")
def registry():
    return build_registry(plugins=False)


def node_errors(registry, dirs: Dirs, prompt: dict) -> dict:
    return validate(parse_workflow(prompt), registry, dirs).node_errors


# ---- the budget itself --------------------------------------------------------------------------------------


def test_flags_give_limits_and_defaults_follow_the_machine():
    parser = add_limit_arguments(argparse.ArgumentParser())
    limits = limits_from_args(parser.parse_args(["--max-tensor-mb", "64", "--max-tokens", "300",
                                                 "--max-schedule-steps", "50", "--max-image-megapixels", "2"]))
    assert limits.memory_bytes == 64 * MIB and limits.max_tokens == 300 and limits.max_schedule_steps == 50
    assert limits.max_image_pixels == 2_000_000 and limits.max_image_frames == Limits().max_image_frames
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert limits_from_args(parser.parse_args([])).memory_bytes == machine_memory_bytes() // 4
    assert machine_memory_bytes() <= physical
    with mock.patch("resource.getrlimit", return_value=(8 * 1024 ** 3, -1)):
        assert machine_memory_bytes() == min(physical, 8 * 1024 ** 3)


# ---- latents and images -------------------------------------------------------------------------------------


def test_empty_latent_bomb_is_refused_at_validation(registry, dirs, budget):
    budget(memory_bytes=1024 ** 3)
    prompt = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 8192, "height": 8192, "batch_size": 4096}},
              "2": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0], "vae": ["3", 2]}},
              "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1-tiny.safetensors"}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    errors = node_errors(registry, dirs, prompt)
    message = errors["1"]["errors"][0]["message"] + errors["1"]["errors"][0]["details"]
    assert "EmptyLatentImage.batch_size" in message and "64.0 GiB" in message and "--max-tensor-mb" in message
    prompt["1"]["inputs"]["batch_size"] = 4
    assert "1" not in node_errors(registry, dirs, prompt)


def test_empty_latent_checks_again_at_run_time(dirs):
    ctx = limited(dirs, memory_bytes=MIB)
    with pytest.raises(BudgetExceeded, match="EmptyLatentImage.batch_size.*over the memory budget of 1.0 MiB"):
        call(latent_nodes.EmptyLatent, ctx, width=512, height=512, batch_size=64)  # 4 MiB
    (latent,) = call(latent_nodes.EmptyLatent, ctx, width=512, height=512, batch_size=8)  # 0.5 MiB
    assert latent["samples"].shape == (8, 4, 64, 64)


def test_upscales_and_decode_are_refused_before_allocating(dirs, sd1):
    ctx = limited(dirs, memory_bytes=MIB)
    latent = {"samples": torch.zeros(4, 4, 8, 8), "noise_mask": torch.ones(4, 1, 64, 64)}
    with pytest.raises(BudgetExceeded, match="LatentUpscale.width: the upscaled latent"):
        call(latent_nodes.LatentUpscale, ctx, samples=latent, upscale_method="bilinear", width=2048, height=2048,
             crop="disabled")
    with pytest.raises(BudgetExceeded, match="LatentUpscaleBy.scale_by: the upscaled noise mask"):
        call(latent_nodes.LatentUpscaleBy, ctx, samples=latent, upscale_method="bilinear", scale_by=8.0)
    image = torch.zeros(4, 64, 64, 3)
    with pytest.raises(BudgetExceeded, match="ImageScale.width"):
        call(image_nodes.ImageScale, ctx, image=image, upscale_method="bilinear", width=512, height=512,
             crop="disabled")
    with pytest.raises(BudgetExceeded, match="ImageScaleBy.scale_by"):
        call(image_nodes.ImageScaleBy, ctx, image=image, upscale_method="lanczos", scale_by=8.0)
    _, _, vae = sd1
    with pytest.raises(BudgetExceeded, match=r"VAEDecode.samples: the decoded images \[4x256x256x3\]"):
        call(latent_nodes.VAEDecode, ctx, samples={"samples": torch.zeros(4, 4, 32, 32)}, vae=vae)
    (small,) = call(image_nodes.ImageScaleBy, ctx, image=image, upscale_method="bilinear", scale_by=2.0)
    assert small.shape == (4, 128, 128, 3)


# ---- text ---------------------------------------------------------------------------------------------------


def test_prompt_over_the_char_limit_is_refused_at_validation(registry, dirs, budget):
    budget(max_prompt_chars=1000)
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1-tiny.safetensors"}},
              "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a" * 1001}},
              "3": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["2", 0]}}}
    errors = node_errors(registry, dirs, prompt)
    assert "CLIPTextEncode.text: the prompt's length in characters is 1,001, over the limit of 1,000" in str(errors)
    prompt["2"]["inputs"]["text"] = "a" * 1000
    assert "2" not in node_errors(registry, dirs, prompt)


class Counting:
    """A tokenizer that counts its calls."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_token_limit_stops_tokenising_early(dirs, sd1):
    _, clip, _ = sd1
    ctx = limited(dirs, max_tokens=100)
    runs = " ".join(f"(w{i}:1.{i % 9 + 1})" for i in range(400))  # 400 weighted runs, each 2+ tokens
    counting = Counting(clip.tokenizers[0])
    with pytest.raises(BudgetExceeded, match="CLIPTextEncode.text: the prompt's token count .* over the limit "
                                             "of 100 .*--max-tokens"):
        call(TextEncode, ctx, text=runs, clip=dataclasses.replace(clip, tokenizers=(counting,)))
    assert counting.calls < 100  # stopped at the limit, not after tokenising all 800 runs


def test_long_prompts_are_encoded_in_bounded_batches_with_the_same_result(dirs, sd1):
    _, clip, _ = sd1
    ctx = limited(dirs)
    text = " ".join(f"word{i}" for i in range(900))  # about 36 chunks
    batches: list[int] = []
    original = text_encoding._run_encoder

    def spy(module, spec, skip, ids, device, *rest):
        batches.append(ids.shape[0])
        return original(module, spec, skip, ids, device, *rest)

    with mock.patch.object(text_encoding, "_run_encoder", spy):
        cond = call(TextEncode, ctx, text=text, clip=clip)[0][0][0]
    assert max(batches) == text_encoding.ENCODE_BATCH and sum(batches) == cond.shape[1] // 77 > 16
    groups = text_encoding.weighted_groups(clip.tokenizers[0], text)
    ids, _ = text_encoding.chunk_tokens(groups, clip.tokenizers[0].bos_token_id, clip.tokenizers[0].eos_token_id,
                                        clip.specs[0].pad_id)
    whole, _ = original(clip.encoder(0), clip.specs[0], clip.clip_skip, ids, clip.compute_device())
    assert torch.allclose(cond, whole.reshape(1, -1, whole.shape[-1]), atol=1e-5)
    short = "a (red:1.3) circle on the left"  # one batch: exactly what one encoder call gives
    plain = call(TextEncode, ctx, text=short, clip=clip)[0][0][0]
    with mock.patch.object(text_encoding, "ENCODE_BATCH", 10 ** 6):
        assert torch.equal(plain, call(TextEncode, ctx, text=short, clip=clip)[0][0][0])


# ---- schedules ----------------------------------------------------------------------------------------------


def test_schedule_length_is_refused_before_it_is_built(dirs, budget):
    budget(max_schedule_steps=100_000)
    message = KSampler.validate_inputs(dirs, steps=10000, denoise=1e-4)
    assert "KSampler.denoise: the schedule length (steps / denoise = 10000 / 0.0001) is 100,000,000" in message
    assert "--max-schedule-steps" in message
    assert KSampler.validate_inputs(dirs, steps=10000, denoise=0.1) is None
    assert KSampler.validate_inputs(dirs, steps=20, denoise=0.0) is None
    budget(max_schedule_steps=50)
    assert "KSamplerAdvanced.steps" in KSamplerAdvanced.validate_inputs(dirs, steps=60)
    with pytest.raises(BudgetExceeded, match="KSampler.denoise"):  # linked inputs: checked before planning
        call(KSampler, limited(dirs, max_schedule_steps=50), model=None, seed=0, steps=10, cfg=1.0,
             sampler_name="euler", scheduler="normal", positive=[], negative=[], latent_image={}, denoise=0.1)


# ---- image files --------------------------------------------------------------------------------------------


def _animated(path, frames: int, size: int = 16) -> None:
    images = [Image.new("RGB", (size, size), (i * 40 % 256, 0, 0)) for i in range(frames)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=10)


def test_image_frames_and_pixels_are_counted_before_decoding(registry, dirs, budget):
    _animated(dirs.input / "frames5.png", 5)
    budget(max_image_frames=4)
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "frames5.png"}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    assert "LoadImage.image: the number of frames is 5, over the limit of 4" in str(
        node_errors(registry, dirs, prompt))
    budget(max_image_pixels=5 * 16 * 16 - 1)
    assert "the decoded pixels (frames x width x height) is 1,280" in str(node_errors(registry, dirs, prompt))
    budget(memory_bytes=5 * 16 * 16 * 16 - 1)
    assert "the decoded frames [5x16x16x4]" in str(node_errors(registry, dirs, prompt))
    budget()
    assert node_errors(registry, dirs, prompt) == {}
    with mock.patch.object(Image.Image, "load", side_effect=AssertionError("decoded")):
        with pytest.raises(BudgetExceeded, match="the number of frames"):
            call(image_nodes.LoadImage, limited(dirs, max_image_frames=4), image="frames5.png")
    image, mask = call(image_nodes.LoadImage, limited(dirs), image="frames5.png")
    assert image.shape == (5, 16, 16, 3) and mask.shape == (5, 16, 16)
    with pytest.raises(BudgetExceeded, match="LoadImageMask.image: the decoded pixels"):
        call(image_nodes.LoadImageMask, limited(dirs, max_image_pixels=100), image="frames5.png", channel="red")


# ---- LoadImage names ----------------------------------------------------------------------------------------


def test_load_image_takes_subfolders_and_annotated_names(registry, dirs, tmp_path):
    (dirs.input / "sub").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(dirs.input / "sub" / "red.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(dirs.output / "blue.png")
    Image.new("RGB", (8, 8), (0, 255, 0)).save(dirs.temp / "green.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    (dirs.input / "escape").mkdir(exist_ok=True)
    if not (dirs.input / "escape" / "link.png").exists():
        (dirs.input / "escape" / "link.png").symlink_to(tmp_path / "secret.png")

    def verdict(name: str) -> str:
        prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": name}},
                  "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
        return str(node_errors(registry, dirs, prompt).get("1", ""))

    for good in ("sub/red.png", "sub/red.png [input]", "blue.png [output]", "green.png [temp]"):
        assert verdict(good) == "", good
    for bad in ("../secret.png", "sub/../../secret.png", str(tmp_path / "secret.png"), "escape/link.png",
                "sub/missing.png", "blue.png", "sub\\red.png", "x" * 300 + ".png"):
        assert "Invalid image file" in verdict(bad), bad
        assert "value_not_in_list" not in verdict(bad), bad
    ctx = limited(dirs)
    assert call(image_nodes.LoadImage, ctx, image="blue.png [output]")[0][0, 0, 0].tolist() == [0.0, 0.0, 1.0]
    assert call(image_nodes.LoadImage, ctx, image="sub/red.png")[0][0, 0, 0].tolist() == [1.0, 0.0, 0.0]
    mask = call(image_nodes.LoadImageMask, ctx, image="green.png [temp]", channel="green")[0]
    assert mask.shape == (1, 8, 8) and float(mask.min()) == 1.0


def test_the_cli_flags_reach_the_checks(tmp_path, capsys):
    from sdgraph.cli import main

    workflow = tmp_path / "latent.json"  # 4 x 4 x 256 x 256 float32: 4 MiB
    workflow.write_text('{"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 2048, "height": 2048, '
                        '"batch_size": 4}}}')
    before = current_limits()
    try:
        args = ["validate", str(workflow), "--base-dir", str(tmp_path), "--no-plugins"]
        main(args + ["--max-tensor-mb", "1"])
        assert "--max-tensor-mb" in capsys.readouterr().err
        main(args + ["--max-tensor-mb", "64"])
        assert "--max-tensor-mb" not in capsys.readouterr().err
    finally:
        configure(before)
