"""Cross-prompt batching on tiny models of the real architectures: prompts run as one group, their UNet calls
merged, and each prompt's latent is bit for bit the one it gets when run alone."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from sdgraph.context import Services
from sdgraph.execute import Executor, Member
from sdgraph.models import ModelManager
from sdgraph.nodes.sd import unet_merge
from sdgraph.paths import Dirs
from sdgraph.plugins import build_registry


def txt2img(tag: str, *, seed: int, text: str = "a red circle", sampler: str = "euler", steps: int = 3,
            cfg: float = 5.0, denoise: float = 1.0, ckpt: str = "sd1-tiny.safetensors",
            lora: bool = False, control: bool = False) -> dict[str, Any]:
    wf: dict[str, Any] = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": f"batching/{tag}"}},
    }
    model, positive = ["1", 0], ["2", 0]
    if lora:
        wf["7"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, "lora_name": "tiny-lora.safetensors",
                                                                    "strength_model": 0.8}}
        model = ["7", 0]
    if control:
        wf["8"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "tiny-controlnet"}}
        wf["9"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                          "color": 0xFF0000}}
        wf["10"] = {"class_type": "ControlNetApply", "inputs": {"conditioning": positive, "control_net": ["8", 0],
                                                                "image": ["9", 0], "strength": 0.7}}
        positive = ["10", 0]
    wf["5"] = {"class_type": "KSampler", "inputs": {"model": model, "seed": seed, "steps": steps, "cfg": cfg,
                                                    "sampler_name": sampler, "scheduler": "normal",
                                                    "positive": positive, "negative": ["3", 0],
                                                    "latent_image": ["4", 0], "denoise": denoise}}
    return wf


@pytest.fixture(scope="module")
def registry():
    return build_registry(None, plugins=False)


def executor(registry, dirs: Dirs) -> Executor:
    return Executor(registry, Services(dirs=dirs, models=ModelManager(force_cpu=True)))


def latent(dirs: Dirs, result: Any) -> torch.Tensor:
    record = result.outputs["6"]["latents"][0]
    return load_file(str(Path(dirs.output) / record["subfolder"] / record["filename"]))["latent_tensor"]


@pytest.fixture
def merges(monkeypatch) -> list[tuple[int, ...]]:
    """The row counts of each merged UNet forward."""
    seen: list[tuple[int, ...]] = []
    forward = unet_merge._forward

    def counting(calls, rows):
        seen.append(rows)
        return forward(calls, rows)

    monkeypatch.setattr(unet_merge, "_forward", counting)
    return seen


def solo_and_group(registry, dirs: Dirs, prompts: dict[str, dict[str, Any]]) -> tuple[dict, dict]:
    solo_ex = executor(registry, dirs)
    alone = {}
    for tag, wf in prompts.items():
        result = solo_ex.run(wf)
        assert result.ok, result.error
        alone[tag] = latent(dirs, result)
    group_ex = executor(registry, dirs)
    results = group_ex.execute_group([Member(group_ex.prepare(wf), tag) for tag, wf in prompts.items()])
    assert all(r.ok for r in results), [r.error for r in results]
    together = {r.prompt_id: latent(dirs, r) for r in results}
    return alone, together


def assert_bit_identical(alone: dict, together: dict) -> None:
    for tag in alone:
        assert torch.equal(alone[tag], together[tag]), f"{tag}: max diff {(alone[tag] - together[tag]).abs().max()}"


def test_prompts_differing_in_seed_and_text_are_sampled_as_one_batch_bit_for_bit(registry, dirs, merges):
    prompts = {f"p{i}": txt2img(f"p{i}", seed=i * 11, text=f"a red circle number {i}") for i in range(4)}
    alone, together = solo_and_group(registry, dirs, prompts)
    assert_bit_identical(alone, together)
    assert (2, 2, 2, 2) in merges and len(merges) == 3  # cond and uncond of four prompts, each of three steps
    verdicts = [v for found in unet_merge._verdicts.values() for v in found.values()]
    assert verdicts and all(verdicts), "a merged forward was not bit-identical on this CPU: no speed-up from batching"


def test_samplers_with_their_own_noise_denoise_steps_and_cfg_one_stay_exact(registry, dirs, merges):
    prompts = {
        "ancestral": txt2img("ancestral", seed=1, sampler="euler_ancestral"),
        "sde": txt2img("sde", seed=2, sampler="dpmpp_2m_sde"),
        "img2img": txt2img("img2img", seed=3, denoise=0.6),
        "longer": txt2img("longer", seed=4, steps=5, sampler="dpmpp_2m"),
        "no-cfg": txt2img("no-cfg", seed=5, cfg=1.0),  # one row: its convolutions run at batch one
    }
    alone, together = solo_and_group(registry, dirs, prompts)
    assert_bit_identical(alone, together)
    assert any(1 in rows and len(rows) > 1 for rows in merges)


def test_sdxl_lora_and_controlnet_prompts_in_one_group_stay_exact(registry, dirs, merges):
    prompts = {
        "xl-a": txt2img("xl-a", seed=1, ckpt="sdxl-tiny.safetensors"),
        "xl-b": txt2img("xl-b", seed=2, ckpt="sdxl-tiny.safetensors", text="a blue square"),
        "lora": txt2img("lora", seed=3, lora=True),
        "lora-2": txt2img("lora-2", seed=4, lora=True, text="green"),
        "control": txt2img("control", seed=5, control=True),  # its calls carry residuals: computed alone
    }
    alone, together = solo_and_group(registry, dirs, prompts)
    assert_bit_identical(alone, together)
    assert (2, 2) in merges  # the SDXL pair (with their added conditioning) and the LoRA pair


def test_a_merge_that_would_differ_is_caught_and_its_calls_made_one_by_one(registry, dirs, monkeypatch, caplog):
    forward = unet_merge._forward
    monkeypatch.setattr(unet_merge, "_forward", lambda calls, rows: forward(calls, rows) + 1e-3)
    monkeypatch.setattr(unet_merge, "_verdicts", type(unet_merge._verdicts)())
    prompts = {f"q{i}": txt2img(f"q{i}", seed=100 + i) for i in range(3)}
    with caplog.at_level(logging.WARNING, logger="sdgraph.cobatch"):
        alone, together = solo_and_group(registry, dirs, prompts)
    assert_bit_identical(alone, together)
    assert "differ from the calls made one by one" in caplog.text


def test_the_worker_key_groups_prompts_by_their_models(registry, dirs):
    ex = executor(registry, dirs)
    key = lambda wf: ex.batch_key(ex.prepare(wf))  # noqa: E731
    base = key(txt2img("a", seed=1))
    assert base is not None
    assert key(txt2img("b", seed=9, text="other", sampler="dpmpp_2m", steps=7)) == base
    assert key(txt2img("c", seed=1, ckpt="sdxl-tiny.safetensors")) != base
    assert key(txt2img("d", seed=1, lora=True)) != base


def test_merges_past_the_pixel_bound_are_split_into_several_forwards(registry, dirs, merges, monkeypatch):
    monkeypatch.setattr(unet_merge, "MAX_MERGED_PIXELS", 2 * 2 * 8 * 8)  # two prompts' cond and uncond at 64x64
    prompts = {f"s{i}": txt2img(f"s{i}", seed=50 + i) for i in range(4)}
    alone, together = solo_and_group(registry, dirs, prompts)
    assert_bit_identical(alone, together)
    assert merges and all(rows == (2, 2) for rows in merges) and len(merges) == 6
