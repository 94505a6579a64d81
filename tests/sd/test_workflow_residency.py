"""A txt2img workflow through the real Executor; model residency instrumented and asserted."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.models import ModelManager
from sdgraph.registry import Registry

sampling = pytest.importorskip("sdgraph.nodes.sd.sampling")


def registry() -> Registry:
    from sdgraph.nodes.sd import conditioning, image, latent, loaders

    reg = Registry()
    for module in (loaders, conditioning, latent, image, sampling):
        reg.add_native(module.NODES, "sd")
    return reg


def txt2img(seed: int = 1, ckpt: str = "sd1-tiny.safetensors") -> dict:
    """An API-format workflow using ComfyUI's class_type names."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a (red:1.2) circle", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": seed, "steps": 2, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "wf/test"}},
    }


def run(executor: Executor, workflow: dict, extra: dict | None = None):
    result = executor.run(workflow, extra_data=extra or {})
    assert result.ok, result.error
    return result


def separate(**options) -> ModelManager:
    """A manager whose CPU compute device acts as a separate one: moves copy, its memory is not RAM."""
    return ModelManager("cpu", simulated_device=True, **options)


def test_workflow_runs_and_second_run_loads_and_moves_nothing(dirs):
    mgr = separate()
    executor = Executor(registry(), Services(dirs=dirs, models=mgr))
    editor = {"nodes": [], "links": []}
    first = run(executor, txt2img(1), {"extra_pnginfo": {"workflow": editor}})
    assert mgr.stats.disk_loads == 1 and mgr.stats.moves_to_device >= 3
    record = first.outputs["7"]["images"][0]
    png = Image.open(dirs.output / record["subfolder"] / record["filename"])
    assert json.loads(png.text["prompt"])["5"]["class_type"] == "KSampler"
    assert json.loads(png.text["workflow"]) == editor
    before = mgr.stats.snapshot()
    second = run(executor, txt2img(2))  # new seed: sampler, decoder and saver run again
    assert "5" in second.executed and "1" in second.cached
    fresh = Executor(registry(), Services(dirs=dirs, models=mgr))  # empty output cache, same manager
    third = run(fresh, txt2img(2))
    assert "1" in third.executed
    after = mgr.stats.snapshot()
    assert after["disk_loads"] == before["disk_loads"]
    assert after["moves_to_device"] == before["moves_to_device"] and after["moves_to_offload"] == 0
    names = {r["filename"] for r in (first.outputs["7"]["images"] + second.outputs["7"]["images"]
                                     + third.outputs["7"]["images"])}
    assert len(names) == 3, "SaveImage never overwrites"


def _decoded(dirs, mgr: ModelManager) -> torch.Tensor:
    executor = Executor(registry(), Services(dirs=dirs, models=mgr))
    result = run(executor, txt2img(7))
    record = result.outputs["7"]["images"][0]
    return torch.from_numpy(__import__("numpy").asarray(Image.open(dirs.output / record["subfolder"] / record["filename"])).copy())


def test_zero_budget_streams_every_module_layer_by_layer_with_the_same_picture(dirs):
    reference = _decoded(dirs, ModelManager(force_cpu=True))
    mgr = separate(budget_bytes=0)
    assert torch.equal(_decoded(dirs, mgr), reference)
    roles = {slot.role for slot in mgr.streamed()}
    assert roles >= {"unet", "text_encoder", "vae"} and mgr.resident() == [] and mgr.resident_bytes() == 0
    assert mgr.stats.moves_to_device == 0 and mgr.stats.streamed_uses >= 3
    layers = sum(len(slot.hooks) // 2 for slot in mgr.streamed())
    assert mgr.stats.layer_visits >= layers, "each layer's weights came to the compute device for its forward"


def test_a_module_larger_than_the_budget_streams_while_the_others_stay_resident(dirs):
    from sdgraph.nodes.sd.loading import load_checkpoint

    mgr = separate()
    model, clip, vae = load_checkpoint(dirs.find_model("checkpoints", "sd1-tiny.safetensors"), mgr)
    largest, *others = sorted([model.slot, clip.encoders[0], vae.slot], key=lambda slot: -slot.nbytes)
    mgr.budget_bytes = sum(slot.nbytes for slot in others)  # room for the others, not for the largest
    assert largest.nbytes > mgr.budget_bytes
    reference = _decoded(dirs, ModelManager(force_cpu=True))
    assert torch.equal(_decoded(dirs, mgr), reference)
    assert mgr.streamed() == [largest] and set(mgr.resident()) == set(others)
    visits = mgr.stats.layer_visits
    assert visits > 0
    mgr.budget_bytes = None  # room again: the module becomes resident and its hooks go
    mgr.acquire(largest)
    assert largest.resident and not largest.streamed and not largest.hooks
    assert torch.equal(_decoded(dirs, mgr), reference)
    assert mgr.stats.layer_visits == visits


def test_over_budget_eviction_and_reload(dirs):
    from sdgraph.nodes.sd.loading import load_checkpoint

    mgr = separate()
    model, clip, vae = load_checkpoint(dirs.find_model("checkpoints", "sd1-tiny.safetensors"), mgr)
    text = clip.encoders[0]
    mgr.budget_bytes = model.slot.nbytes + text.nbytes  # room for the UNet and the text encoder, not the VAE too
    mgr.acquire(model.slot)
    mgr.acquire(text)
    assert mgr.resident() == [model.slot, text]
    mgr.acquire(vae.slot)  # evicts the least recently used: the UNet
    assert not model.slot.resident and text.resident and vae.slot.resident
    assert mgr.stats.moves_to_offload == 1 and mgr.resident_bytes() <= mgr.budget_bytes
    assert mgr.ram_bytes() == model.slot.nbytes, "only the offloaded UNet is in CPU memory"
    moved = mgr.stats.moves_to_device
    mgr.acquire(model.slot)  # comes back, pushing out the text encoder (now least recent)
    assert model.slot.resident and not text.resident and mgr.stats.moves_to_device == moved + 1
    mgr.unload_all()
    assert mgr.resident() == []
    mgr.free_memory()
    assert mgr.stats.disk_loads == 1 and mgr.ram_bytes() == 0 and not model.slot.loaded
    assert load_checkpoint(dirs.find_model("checkpoints", "sd1-tiny.safetensors"), mgr)[0] is model
    assert mgr.stats.disk_loads == 2 and model.slot.loaded


def test_executor_cache_holds_references_not_copies(dirs):
    mgr = ModelManager(force_cpu=True)
    executor = Executor(registry(), Services(dirs=dirs, models=mgr))
    run(executor, txt2img(3))
    from sdgraph.nodes.sd.loading import load_checkpoint

    model, _, _ = load_checkpoint(dirs.find_model("checkpoints", "sd1-tiny.safetensors"), mgr)
    values = [v for entry in executor.cache._entries.values() for out in entry.values
              for v in (out if isinstance(out, list) else [out])]
    assert any(v is model for v in values), "the cached MODEL is the manager's object itself"
