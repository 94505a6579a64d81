"""SaveLatent / LoadLatent read and write ComfyUI's `.latent` files: a safetensors file with "latent_tensor" and the
"latent_format_version_0" marker, the workflow in its metadata; files without the marker are ComfyUI's legacy
(scaled by 0.18215) ones."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import call, make_ctx
from sdgraph.limits import BudgetExceeded, Limits
from sdgraph.nodes.sd import latent_files
from sdgraph.nodes.sd.latent_files import LatentFileError, LoadLatent, SaveLatent, read_latent
from sdgraph.paths import Dirs
from sdgraph.runtime import RuntimeOptions, create_executor

PROMPT = {"1": {"class_type": "EmptyLatentImage", "inputs": {}}}
WORKFLOW = {"nodes": [], "links": []}
# ComfyUI's /object_info for the two nodes (reference/comfyui-core-nodes.json)
COMFY_SPECS = {
    "SaveLatent": {"input": {"required": {"samples": ["LATENT"],
                                          "filename_prefix": ["STRING", {"default": "latents/ComfyUI"}]},
                             "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}},
                   "input_order": {"required": ["samples", "filename_prefix"], "hidden": ["prompt", "extra_pnginfo"]},
                   "output": [], "output_name": [], "category": "_for_testing"},
    "LoadLatent": {"input": {"required": {"latent": [[]]}}, "input_order": {"required": ["latent"]},
                   "output": ["LATENT"], "output_name": ["LATENT"], "category": "_for_testing"},
}


@pytest.fixture
def home(tmp_path: Path) -> Dirs:
    for sub in ("input", "output"):
        (tmp_path / sub).mkdir()
    return Dirs(base=tmp_path, extra_model_roots=[])


@pytest.fixture
def ctx(home: Dirs) -> Any:
    return make_ctx(home, None)


def _samples(shape: tuple[int, ...] = (2, 4, 3, 5)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def _load(ctx: Any, name: str) -> torch.Tensor:
    assert LoadLatent.validate_inputs(ctx.dirs, latent=name) is None
    return call(LoadLatent, ctx, latent=name)[0]["samples"]


def test_nodes_have_comfyuis_spec(home: Dirs) -> None:
    executor = create_executor(RuntimeOptions(base_dir=home.base, plugins=False))
    described = executor.registry.describe(home)
    for name, spec in COMFY_SPECS.items():
        assert {key: described[name][key] for key in spec} == spec, name
    assert described["SaveLatent"]["output_node"] and not described["LoadLatent"]["output_node"]


def test_save_writes_comfyuis_layout_with_counters_and_metadata(ctx: Any) -> None:
    samples = _samples()
    first = call(SaveLatent, ctx, samples={"samples": samples}, filename_prefix="latents/run", prompt=PROMPT,
                 extra_pnginfo={"workflow": WORKFLOW})
    second = call(SaveLatent, ctx, samples={"samples": samples[:1]}, filename_prefix="latents/run")
    assert first.ui == {"latents": [{"filename": "run_00001_.latent", "subfolder": "latents", "type": "output"}]}
    assert second.ui["latents"][0]["filename"] == "run_00002_.latent"
    with safe_open(str(ctx.dirs.output / "latents" / "run_00001_.latent"), framework="pt") as f:
        assert sorted(f.keys()) == ["latent_format_version_0", "latent_tensor"]
        assert torch.equal(f.get_tensor("latent_tensor"), samples)
        assert f.get_tensor("latent_format_version_0").numel() == 0
        assert json.loads(f.metadata()["prompt"]) == PROMPT and json.loads(f.metadata()["workflow"]) == WORKFLOW
    with safe_open(str(ctx.dirs.output / "latents" / "run_00002_.latent"), framework="pt") as f:
        assert f.metadata() == {"prompt": ""}  # ComfyUI writes an empty prompt when there is none


def test_round_trip_through_the_output_directory(ctx: Any) -> None:
    samples = _samples()
    record = call(SaveLatent, ctx, samples={"samples": samples}, filename_prefix="again").ui["latents"][0]
    assert torch.equal(_load(ctx, f"{record['filename']} [output]"), samples)


def test_executor_embeds_the_prompt_and_lists_input_latents(home: Dirs) -> None:
    executor = create_executor(RuntimeOptions(base_dir=home.base, plugins=False))
    workflow = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 32, "batch_size": 1}},
                "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0], "filename_prefix": "flow"}}}
    result = executor.run(workflow)
    assert result.ok, result.error
    (record,) = result.outputs["2"]["latents"]
    saved = home.output / record["filename"]
    with safe_open(str(saved), framework="pt") as f:
        assert json.loads(f.metadata()["prompt"])["2"]["class_type"] == "SaveLatent"
    (home.input / "copy.latent").write_bytes(saved.read_bytes())
    (home.input / "picture.png").write_bytes(b"")
    assert latent_files.input_latents(home) == ["copy.latent"]
    loaded = executor.run({"3": {"class_type": "LoadLatent", "inputs": {"latent": "copy.latent"}},
                           "4": {"class_type": "SaveLatent",
                                 "inputs": {"samples": ["3", 0], "filename_prefix": "latents/ComfyUI"}}})
    assert loaded.ok, loaded.error
    assert loaded.outputs["4"]["latents"][0] == {"filename": "ComfyUI_00001_.latent", "subfolder": "latents",
                                                 "type": "output"}


def test_reads_a_file_in_comfyuis_exact_layout(ctx: Any) -> None:
    samples = _samples((1, 4, 8, 8)).half()  # ComfyUI saves whatever dtype the latent has
    save_file({"latent_tensor": samples, "latent_format_version_0": torch.tensor([])},
              str(ctx.dirs.input / "comfy.latent"), metadata={"prompt": json.dumps(PROMPT)})
    loaded = _load(ctx, "comfy.latent")
    assert loaded.dtype == torch.float32 and torch.equal(loaded, samples.float())


def test_a_legacy_file_without_the_marker_is_scaled_back(ctx: Any) -> None:
    samples = _samples()
    save_file({"latent_tensor": samples}, str(ctx.dirs.input / "old.latent"))
    torch.testing.assert_close(_load(ctx, "old.latent"), samples / 0.18215, rtol=1e-6, atol=0)


@pytest.mark.parametrize("tensors,message", [
    ({"samples": torch.zeros(1, 4, 8, 8), "latent_format_version_0": torch.tensor([])},
     "no 'latent_tensor' tensor (has ['latent_format_version_0', 'samples'])"),
    ({"latent_tensor": torch.zeros(4, 8, 8), "latent_format_version_0": torch.tensor([])},
     "'latent_tensor' has shape [4, 8, 8]; a LATENT is [B, C, h, w]"),
])
def test_bad_files_are_refused_naming_the_file_and_the_problem(ctx: Any, tensors: dict, message: str) -> None:
    save_file(tensors, str(ctx.dirs.input / "bad.latent"))
    problem = LoadLatent.validate_inputs(ctx.dirs, latent="bad.latent")
    assert problem == f"Invalid latent file: 'bad.latent': bad.latent: {message}"
    with pytest.raises(LatentFileError, match=re.escape(f"bad.latent: {message}")):
        call(LoadLatent, ctx, latent="bad.latent")


def test_not_a_safetensors_file_and_a_missing_file(ctx: Any) -> None:
    (ctx.dirs.input / "noise.latent").write_bytes(b"\x00\x01 not safetensors")
    problem = LoadLatent.validate_inputs(ctx.dirs, latent="noise.latent")
    assert problem.startswith("Invalid latent file: 'noise.latent': noise.latent: not a safetensors .latent file")
    missing = LoadLatent.validate_inputs(ctx.dirs, latent="gone.latent")
    assert missing == "Invalid latent file: 'gone.latent': no such file"
    assert LoadLatent.validate_inputs(ctx.dirs, latent="../x.latent") == \
        "Invalid latent file: '../x.latent': path '../x.latent' contains '..'"


def test_a_latent_over_the_memory_budget_is_refused_before_reading(ctx: Any) -> None:
    save_file({"latent_tensor": torch.zeros(2, 4, 16, 16), "latent_format_version_0": torch.tensor([])},
              str(ctx.dirs.input / "big.latent"))
    with pytest.raises(BudgetExceeded, match=r"LoadLatent\.latent: the latent \[2x4x16x16\]"):
        read_latent(ctx.dirs.input / "big.latent", Limits(memory_bytes=1024))
