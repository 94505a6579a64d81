"""Saved models read back as what was saved: checkpoints (SD 1.x with a LoRA baked in, SD 2.x v-prediction, SDXL),
UNet-only, per-encoder text-encoder files and VAEs, each in the layout ComfyUI's savers write."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from conftest import call, make_ctx
from sdgraph.models import ModelManager
from sdgraph.nodes.sd.conditioning import TextEncode
from sdgraph.nodes.sd.loading import load_checkpoint, load_vae
from sdgraph.nodes.sd.lora import apply_lora, read_lora
from sdgraph.nodes.sd.saving import CheckpointSave, CLIPSave, ModelSave, VAESave
from sdgraph.paths import Dirs

PROMPT = {"1": {"class_type": "CheckpointSave", "inputs": {}}}
WORKFLOW = {"workflow": {"nodes": [], "links": []}}


@pytest.fixture
def out_ctx(tmp_path: Path, dirs: Dirs, manager: ModelManager) -> Any:
    return make_ctx(Dirs(base=tmp_path, extra_model_roots=dirs.model_roots("checkpoints")[:0]), manager)


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if not k.endswith("position_ids")}


def encode(ctx: Any, clip: Any, text: str = "a red circle") -> torch.Tensor:
    return call(TextEncode, ctx, text=text, clip=clip)[0][0][0]


def saved(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(pattern))


def test_a_checkpoint_with_a_lora_reads_back_as_the_patched_model(out_ctx: Any, sd1: Any, dirs: Dirs,
                                                                  manager: ModelManager) -> None:
    model, clip, vae = sd1
    identity, raw = read_lora(dirs.find_model("loras", "tiny-lora.safetensors"), manager)
    model, clip = apply_lora(model, clip, identity, raw, 0.7, 0.5)
    want_unet, want_cond = state(model.unet()), encode(out_ctx, clip)
    call(CheckpointSave, out_ctx, model=model, clip=clip, vae=vae, filename_prefix="checkpoints/merged",
         prompt=PROMPT, extra_pnginfo=WORKFLOW)
    [path] = saved(out_ctx.dirs.output, "checkpoints/merged_00001_.safetensors")
    with safe_open(str(path), "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    assert any(k.startswith("model.diffusion_model.input_blocks.") for k in keys)
    assert any(k.startswith("cond_stage_model.transformer.text_model.") for k in keys)
    assert any(k.startswith("first_stage_model.encoder.down.") for k in keys) and "v_pred" not in keys
    assert json.loads(metadata["prompt"]) == PROMPT and json.loads(metadata["workflow"]) == WORKFLOW["workflow"]
    assert metadata["modelspec.predict_key"] == "epsilon"
    fresh = ModelManager(force_cpu=True)
    model2, clip2, vae2 = load_checkpoint(path, fresh)
    got = state(model2.unet())
    assert got.keys() == want_unet.keys()
    assert all(torch.equal(got[k], want_unet[k]) for k in got)
    torch.testing.assert_close(encode(out_ctx, clip2), want_cond, rtol=0, atol=0)
    latents = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(vae2.decode(latents), vae.decode(latents))
    call(CheckpointSave, out_ctx, model=model, clip=clip, vae=vae, filename_prefix="checkpoints/merged")
    assert [p.name for p in saved(out_ctx.dirs.output, "checkpoints/merged_*")] == \
        ["merged_00001_.safetensors", "merged_00002_.safetensors"]  # never overwritten


@pytest.mark.parametrize("name", ["sd2-tiny.safetensors", "sdxl-tiny.safetensors"])
def test_sd2_and_sdxl_checkpoints_round_trip(out_ctx: Any, dirs: Dirs, manager: ModelManager, name: str) -> None:
    model, clip, vae = load_checkpoint(dirs.find_model("checkpoints", name), manager)
    call(CheckpointSave, out_ctx, model=model, clip=clip, vae=vae, filename_prefix="again")
    [path] = saved(out_ctx.dirs.output, "again_*.safetensors")
    with safe_open(str(path), "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    assert ("v_pred" in keys) == (model.prediction_type == "v_prediction")
    if model.is_sdxl:
        assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base"
    model2, clip2, _ = load_checkpoint(path, ModelManager(force_cpu=True))
    assert model2.prediction_type == model.prediction_type and model2.is_sdxl == model.is_sdxl
    unet, unet2 = state(model.unet()), state(model2.unet())
    assert all(torch.equal(unet[k], unet2[k]) for k in unet)
    torch.testing.assert_close(encode(out_ctx, clip2), encode(out_ctx, clip), rtol=0, atol=0)


def test_model_clip_and_vae_files(out_ctx: Any, sdxl: Any, sd1: Any) -> None:
    model, clip, _ = sdxl
    call(ModelSave, out_ctx, model=model, filename_prefix="diffusion_models/unet")
    [unet_file] = saved(out_ctx.dirs.output, "diffusion_models/unet_00001_.safetensors")
    with safe_open(str(unet_file), "pt") as f:
        assert all(k.startswith("model.diffusion_model.") for k in f.keys())
        assert f.get_tensor("model.diffusion_model.input_blocks.0.0.weight").equal(model.unet().conv_in.weight)
    call(CLIPSave, out_ctx, clip=clip, filename_prefix="clip/te")
    files = [p.name for p in saved(out_ctx.dirs.output, "clip/*")]
    assert files == ["te_clip_g_00001_.safetensors", "te_clip_l_00001_.safetensors"]
    with safe_open(str(out_ctx.dirs.output / "clip" / files[0]), "pt") as f:
        assert f.metadata()["format"] == "pt" and "text_projection.weight" in f.keys()
        assert f.get_tensor("text_projection.weight").equal(clip.encoder(1).text_projection.weight)
    vae = sd1[2]
    call(VAESave, out_ctx, vae=vae, filename_prefix="vae/tiny")
    [vae_file] = saved(out_ctx.dirs.output, "vae/tiny_00001_.safetensors")
    with safe_open(str(vae_file), "pt") as f:
        assert "encoder.down.0.block.0.conv1.weight" in f.keys()
    again = load_vae(vae_file, ModelManager(force_cpu=True))
    pixels = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again.encode(pixels), vae.encode(pixels))
