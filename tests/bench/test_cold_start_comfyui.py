"""bench.cold_start's ComfyUI child on a stand-in checkout: the workflow's nodes in order, the overrides applied,
the model and output folders under the run's base, the phases measured."""
from __future__ import annotations

import json
import math
from pathlib import Path

from bench.cold_start import cold_run
from bench.load import SD15_RUN

# A stand-in for a ComfyUI checkout: each node class records its call (a link as its class name) in calls.jsonl
# beside it.
NODES = '''
import json, os, sys

BASE = sys.argv[sys.argv.index("--base-directory") + 1]
assert "--cpu" in sys.argv


class Node:
    FUNCTION = "run"
    HIDDEN = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "hidden": cls.HIDDEN}

    def run(self, **kwargs):
        shown = {k: type(v).__name__ if isinstance(v, Node) else v for k, v in kwargs.items()}
        with open(os.path.join(os.path.dirname(__file__), "calls.jsonl"), "a") as f:
            f.write(json.dumps([type(self).__name__, shown]) + "\\n")
        return (self, self, self)


class CheckpointLoaderSimple(Node):
    def run(self, ckpt_name):
        assert os.path.isfile(os.path.join(BASE, "models", "checkpoints", ckpt_name))
        return super().run(ckpt_name=ckpt_name)


class SaveImage(Node):
    HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}

    def run(self, **kwargs):
        os.makedirs(os.path.join(BASE, "output"), exist_ok=True)
        open(os.path.join(BASE, "output", "txt2img_00001_.png"), "wb").close()
        return super().run(**kwargs)


NODE_CLASS_MAPPINGS = {name: type(name, (Node,), {}) for name in
                       ("CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode")}
NODE_CLASS_MAPPINGS.update(CheckpointLoaderSimple=CheckpointLoaderSimple, SaveImage=SaveImage)
'''


def stand_in_comfyui(where: Path) -> Path:
    (where / "comfy").mkdir(parents=True)
    (where / "comfy" / "__init__.py").write_text("")
    (where / "comfy" / "options.py").write_text("def enable_args_parsing():\n    pass\n")
    (where / "nodes.py").write_text(NODES)
    return where


def test_the_comfyui_child_runs_the_overridden_workflow_node_by_node(tmp_path) -> None:
    comfyui = stand_in_comfyui(tmp_path / "comfyui")
    model = tmp_path / "models" / "sd15.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"weights")
    root = Path(__file__).resolve().parents[2]
    figures = cold_run(root, ["--set", f"checkpoint.ckpt_name={model.name}", *SD15_RUN], model, comfyui=comfyui)

    calls = [json.loads(line) for line in (comfyui / "calls.jsonl").read_text().splitlines()]

    assert [c[0] for c in calls] == ["CheckpointLoaderSimple", "CLIPTextEncode", "CLIPTextEncode",
                                     "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"]
    by_class = {c[0]: c[1] for c in calls}
    assert by_class["CheckpointLoaderSimple"] == {"ckpt_name": "sd15.safetensors"}
    assert by_class["EmptyLatentImage"] == {"width": 256, "height": 256, "batch_size": 1}
    assert by_class["KSampler"]["steps"] == 2 and by_class["KSampler"]["positive"] == "CLIPTextEncode"
    assert by_class["SaveImage"]["images"] == "VAEDecode" and "KSampler" in json.dumps(by_class["SaveImage"]["prompt"])
    assert figures["registry"] == 0
    assert all(math.isfinite(figures[p]) and figures[p] >= 0 for p in
               ("python", "import", "load", "encode", "sample", "decode", "save", "picture", "total"))
