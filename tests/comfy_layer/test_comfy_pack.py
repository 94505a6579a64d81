"""A pack written for ComfyUI, importing ComfyUI's module names, loads and runs through sdgraph's executor."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch

from sdgraph.cache import OutputCache
from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.paths import Dirs
from sdgraph.plugins import load_custom_nodes
from sdgraph.registry import Registry

PACK = '''
import folder_paths
import comfy.utils
import comfy.model_management
import comfy.samplers
import nodes
import node_helpers
import latent_preview
from .py.sizes import clamp_size


class ListCheckpoints:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (folder_paths.get_filename_list("checkpoints"),)}}
    RETURN_TYPES = ("STRING", "STRING")
    FUNCTION = "list"
    CATEGORY = "test"

    OUTPUT_NODE = True

    def list(self, ckpt_name):
        names = ",".join(folder_paths.get_filename_list("checkpoints"))
        path = folder_paths.get_full_path_or_raise("checkpoints", ckpt_name)
        return {"ui": {"text": [names, path]}, "result": (names, path)}


class CountSteps:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 3, "min": 1, "max": nodes.MAX_RESOLUTION}),
                             "sampler": (comfy.samplers.KSampler.SAMPLERS,),
                             "stop_at": ("INT", {"default": -1, "min": -1, "max": 100})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "count"
    CATEGORY = "test"

    def count(self, steps, sampler, stop_at):
        pbar = comfy.utils.ProgressBar(steps)
        done = 0
        for i in range(steps):
            if i == stop_at:
                comfy.model_management.interrupt_current_processing()
            comfy.model_management.throw_exception_if_processing_interrupted()
            pbar.update(1)
            done += 1
        return {"ui": {"done": [done]}, "result": (done,)}
    OUTPUT_NODE = True


class MakeImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 8, "min": 1, "max": nodes.MAX_RESOLUTION})}}
    RETURN_TYPES = ("IMAGE", "LATENT")
    FUNCTION = "make"
    CATEGORY = "test"

    def make(self, width):
        (image,) = nodes.EmptyImage().generate(width, 4, 1, 0xFF0000)
        (scaled,) = nodes.ImageScale().upscale(image, "nearest-exact", clamp_size(width * 2), 8, "disabled")
        (latent,) = nodes.EmptyLatentImage().generate(64, 32)
        MADE.append((scaled, latent))
        return {"ui": {"made": [len(MADE)]}, "result": (scaled, latent)}
    OUTPUT_NODE = True


MADE = []


class PreviewSteps:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 2})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    CATEGORY = "test"

    def go(self, steps):
        store = {}
        callback = latent_preview.prepare_callback(None, steps, store)
        for i in range(steps):
            callback(i, torch_zeros(), None, steps)
        return {"ui": {"kept": [len(store)]}, "result": (len(store),)}
    OUTPUT_NODE = True


def torch_zeros():
    import torch
    return torch.zeros(1, 4, 8, 8)


NODE_CLASS_MAPPINGS = {"ListCheckpoints": ListCheckpoints, "CountSteps": CountSteps, "MakeImage": MakeImage,
                       "PreviewSteps": PreviewSteps}
'''


@pytest.fixture
def comfy_pack(tmp_path):
    base = tmp_path / "home"
    for name in ("a.safetensors", "sub/b.ckpt", "notes.txt"):
        path = base / "models" / "checkpoints" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    pack = base / "custom_nodes" / "my_comfy_pack"
    (pack / "py").mkdir(parents=True)
    (pack / "__init__.py").write_text(textwrap.dedent(PACK))
    (pack / "py" / "__init__.py").write_text("")
    (pack / "py" / "sizes.py").write_text("def clamp_size(x):\n    return max(1, min(x, 64))\n")
    dirs = Dirs(base=base, extra_model_roots=[])
    registry = Registry()
    load_custom_nodes(registry, dirs.custom_nodes, dirs)
    assert not registry.problems, [p.message + p.traceback for p in registry.problems]
    return Executor(registry, Services(dirs=dirs), OutputCache()), dirs


def run(executor, prompt):
    events = []
    result = executor.run(prompt, listener=lambda name, data: events.append((name, data)))
    return result, events


def test_folder_paths_lists_and_resolves_the_checkpoints_of_sdgraphs_directories(comfy_pack):
    executor, dirs = comfy_pack
    spec = executor.registry.get("ListCheckpoints").spec
    assert spec.inputs[0].choices == ("a.safetensors", "sub/b.ckpt")  # .txt is not a model file
    result, _ = run(executor, {"1": {"class_type": "ListCheckpoints", "inputs": {"ckpt_name": "sub/b.ckpt"}}})
    assert result.status == "success", result.error
    names, path = result.outputs["1"]["text"]
    assert names == "a.safetensors,sub/b.ckpt"
    assert Path(path) == dirs.models / "checkpoints" / "sub" / "b.ckpt"


def test_progress_bar_reports_progress_events_of_the_running_node(comfy_pack):
    executor, _ = comfy_pack
    result, events = run(executor, {"7": {"class_type": "CountSteps",
                                          "inputs": {"steps": 3, "sampler": "euler", "stop_at": -1}}})
    assert result.status == "success", result.error
    progress = [(d["value"], d["max"], d["node"]) for name, d in events if name == "progress"]
    assert progress == [(1, 3, "7"), (2, 3, "7"), (3, 3, "7")]


def test_interrupt_from_a_pack_ends_the_run_as_interrupted(comfy_pack):
    executor, _ = comfy_pack
    result, events = run(executor, {"7": {"class_type": "CountSteps",
                                          "inputs": {"steps": 5, "sampler": "euler", "stop_at": 2}}})
    assert result.status == "interrupted"
    assert [d["value"] for name, d in events if name == "progress"] == [1, 2]
    assert "execution_interrupted" in [name for name, _ in events]
    result, _ = run(executor, {"7": {"class_type": "CountSteps",
                                     "inputs": {"steps": 2, "sampler": "euler", "stop_at": -1}}})
    assert result.status == "success"  # the request ended with its run


def test_core_node_classes_run_as_comfyui_classes(comfy_pack):
    executor, _ = comfy_pack
    result, _ = run(executor, {"1": {"class_type": "MakeImage", "inputs": {"width": 6}}})
    assert result.status == "success", result.error
    import sys

    image, latent = sys.modules["sdgraph_custom_nodes.my_comfy_pack"].MADE[-1]
    assert image.shape == (1, 8, 12, 3)
    assert torch.equal(image[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert latent["samples"].shape == (1, 4, 4, 8) and not latent["samples"].any()


def test_latent_preview_callback_counts_steps_and_keeps_x0(comfy_pack):
    executor, _ = comfy_pack
    result, events = run(executor, {"3": {"class_type": "PreviewSteps", "inputs": {"steps": 2}}})
    assert result.status == "success", result.error
    assert [(d["value"], d["max"]) for name, d in events if name == "progress"] == [(1, 2), (2, 2)]
    assert result.outputs["3"]["kept"] == [1]
