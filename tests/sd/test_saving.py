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


def test_extracted_lora_moves_a_model_toward_the_other(out_ctx: Any, tmp_path: Path) -> None:
    """LoraSave of ModelMergeSubtract(b, a): loading it onto a brings a's weights most of the way to b's, the
    norms' whole differences exactly (fp16); the file speaks ComfyUI's key layout."""
    from safetensors.torch import load_file

    from sdgraph.nodes.sd.lora import parse_lora
    from sdgraph.nodes.sd.lora_extract import LoraSave, extract_lora
    from sdgraph.nodes.sd.merging import merge_clips, merge_models
    from tiny_models import save_many_checkpoints

    manager = ModelManager(force_cpu=True)
    a, b = (load_checkpoint(p, manager) for p in save_many_checkpoints(tmp_path / "pair", 2, first_seed=70))
    diff = merge_models(b[0], a[0], -1.0, 1.0)
    text_diff = merge_clips(b[1], a[1], -1.0, 1.0)
    call(LoraSave, out_ctx, filename_prefix="loras/x", rank=64, lora_type="standard", bias_diff=True,
         model_diff=diff, text_encoder_diff=text_diff)
    [path] = saved(out_ctx.dirs.output, "loras/x_00001_.safetensors")
    sd = load_file(str(path))
    assert "diffusion_model.input_blocks.1.1.proj_in.lora_up.weight" in sd
    assert "diffusion_model.out.0.diff" in sd and "diffusion_model.out.2.diff_b" in sd
    assert "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.lora_down.weight" in sd
    assert all(v.dtype == torch.float16 for v in sd.values())
    raw = parse_lora(sd)
    moved = apply_lora(a[0], a[1], "extracted", raw, 1.0, 1.0)
    wa, wb, got = (state(m.unet()) for m in (a[0], b[0], moved[0]))
    assert torch.allclose(got["conv_norm_out.weight"], wb["conv_norm_out.weight"], atol=1e-3)
    # random (full-rank) differences: clipping the factors' outliers keeps only part of the way
    for name, share in (("down_blocks.0.attentions.0.proj_in.weight", 0.2), ("up_blocks.1.resnets.0.conv1.weight", 0.6)):
        assert (got[name] - wb[name]).norm() < share * (wa[name] - wb[name]).norm(), name
    te_a, te_b, te_got = (state(c.encoder(0)) for c in (a[1], b[1], moved[1]))
    q = next(k for k in te_a if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert (te_got[q] - te_b[q]).norm() < 0.2 * (te_a[q] - te_b[q]).norm()
    # a rank-2 difference is recovered by a rank-2 extraction (up to the 1% clipping of outliers)
    g = torch.Generator().manual_seed(3)
    low = torch.randn(40, 2, generator=g) @ torch.randn(2, 30, generator=g)
    up, down = extract_lora(low, 2)
    assert up.shape == (40, 2) and down.shape == (2, 30)
    assert (up @ down - low).norm() < 0.05 * low.norm()
    conv = torch.randn(8, 2, 1, 1, generator=g).flatten(1) @ torch.randn(2, 4 * 9, generator=g)
    up, down = extract_lora(conv.reshape(8, 4, 3, 3), 2)
    assert up.shape == (8, 2, 1, 1) and down.shape == (2, 4, 3, 3)
