"""Checkpoint, VAE and ControlNet loading: architecture detection, weight round trips, caching by file identity."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from sdgraph.models import ModelManager
from sdgraph.nodes.sd.checkpoint_layout import UnsupportedCheckpoint, read_layout
from sdgraph.nodes.sd.loading import load_checkpoint, load_controlnet, load_vae, read_state_dict

from conftest import call


def _same(module: torch.nn.Module, original: torch.nn.Module, atol: float = 0.0, half_values: bool = False) -> None:
    """Every weight of `original` in `module`; `half_values`: as the fp16 values a text encoder keeps."""
    mine = module.state_dict()
    for key, value in original.state_dict().items():
        if key.endswith("position_ids") or key not in mine:  # SD 2.x drops OpenCLIP's last layer
            continue
        expected = value.half().float() if half_values and value.is_floating_point() else value.float()
        assert torch.allclose(mine[key].float(), expected, atol=atol, rtol=0), key


@pytest.mark.parametrize("name,family,prediction", [("sd1-tiny.safetensors", "sd1", "epsilon"),
                                                    ("sd2-tiny.safetensors", "sd2", "v_prediction"),
                                                    ("sdxl-tiny.safetensors", "sdxl", "epsilon"),
                                                    ("sdxl-refiner-tiny.safetensors", "sdxl_refiner", "epsilon")])
def test_single_file_detection_and_exact_weights(tiny_tree, dirs, manager, name, family, prediction):
    path = dirs.find_model("checkpoints", name)
    layout = read_layout(read_state_dict(path), name)
    assert layout.family == family and layout.prediction_type == prediction
    model, clip, vae = load_checkpoint(path, manager)
    parts = tiny_tree[family]
    sdxl = family.startswith("sdxl")
    assert model.is_sdxl == sdxl and model.prediction_type == prediction
    assert model.is_sdxl_refiner == (family == "sdxl_refiner")
    assert len(clip.encoders) == (2 if family == "sdxl" else 1)
    _same(model.slot.module, parts.unet)
    _same(vae.slot.module, parts.vae)
    for slot, original in zip(clip.encoders, parts.encoders):
        _same(slot.module, original, half_values=True)
    assert vae.scaling_factor == (0.13025 if sdxl else 0.18215)
    assert model.latent_format.scale_factor == (0.13025 if sdxl else 0.18215)
    assert model.latent_format.shift_factor == 0.0
    assert model.alphas_cumprod.dtype == torch.float64 and model.alphas_cumprod.shape == (1000,)


def test_sdxl_layout_inferred_from_shapes(dirs):
    path = dirs.find_model("checkpoints", "sdxl-tiny.safetensors")
    unet = read_layout(read_state_dict(path)).unet
    assert unet["block_out_channels"] == [64, 128]
    assert unet["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D"]
    assert unet["transformer_layers_per_block"] == [1, 2]
    assert unet["cross_attention_dim"] == 128 and unet["addition_time_embed_dim"] == 8


def test_prediction_type_from_name_and_marker(dirs):
    sd = read_state_dict(dirs.find_model("checkpoints", "sd1-tiny.safetensors"))
    assert read_layout(sd, "model-vpred.safetensors").prediction_type == "v_prediction"
    assert read_layout({**sd, "v_pred": torch.tensor([])}).prediction_type == "v_prediction"


def test_not_a_checkpoint_is_refused(dirs):
    sd = read_state_dict(dirs.find_model("vae", "tiny-vae.safetensors"))
    with pytest.raises(UnsupportedCheckpoint):
        read_layout(sd)


def test_diffusers_folder_fp16_upcast_on_cpu(tiny_tree, dirs, manager):
    model, clip, vae = load_checkpoint(dirs.find_model("checkpoints", "sd1-tiny-diffusers"), manager)
    assert all(p.dtype == torch.float32 for p in model.slot.module.parameters())
    _same(model.slot.module, tiny_tree["sd1"].unet, atol=2e-3)  # saved in fp16
    assert clip.specs[0].kind == "clip_l" and not model.is_sdxl


def test_checkpoint_loader_simple_node(ctx):
    from sdgraph.nodes.sd.loaders import CheckpointLoaderSimple

    model, clip, vae = call(CheckpointLoaderSimple, ctx, ckpt_name="sd1-tiny.safetensors")
    assert "sd1-tiny-diffusers" in ctx.dirs.list_models("checkpoints")
    assert model.latent_channels == 4 and vae.downscale == 8


LDM_CONFIG = "model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n    linear_start: 0.00085\n"


def test_checkpoint_loader_takes_the_prediction_type_from_its_config(dirs, manager, tmp_path):
    from conftest import make_ctx
    from sdgraph.nodes.sd.loaders import CheckpointLoader, CheckpointLoaderSimple, config_files
    from sdgraph.paths import Dirs

    configs = tmp_path / "models" / "configs"
    (configs / "sub").mkdir(parents=True)
    (configs / "v1-inference.yaml").write_text(LDM_CONFIG)
    (configs / "sub" / "v2-inference-v.yaml").write_text(LDM_CONFIG + '    parameterization: "v"\n')
    (configs / "notes.txt").write_text("not a config")
    (configs / "broken.yaml").write_text("just: [a list\n")
    (configs / "other.yaml").write_text("something: else\n")
    ctx = make_ctx(Dirs(base=tmp_path, extra_model_roots=[dirs.models]), manager)
    assert config_files(ctx.dirs) == ["broken.yaml", "other.yaml", "sub/v2-inference-v.yaml", "v1-inference.yaml"]

    simple, _, _ = call(CheckpointLoaderSimple, ctx, ckpt_name="sd1-tiny.safetensors")
    eps, clip, vae = call(CheckpointLoader, ctx, config_name="v1-inference.yaml", ckpt_name="sd1-tiny.safetensors")
    v, _, _ = call(CheckpointLoader, ctx, config_name="sub/v2-inference-v.yaml", ckpt_name="sd1-tiny.safetensors")
    assert simple.prediction_type == eps.prediction_type == "epsilon" and v.prediction_type == "v_prediction"
    assert v.slot is eps.slot is simple.slot, "the same weights: only the prediction type differs"
    assert call(CheckpointLoaderSimple, ctx, ckpt_name="sd1-tiny.safetensors")[0].prediction_type == "epsilon"
    # the config decides even against the weights' clues (this SD2 checkpoint is detected as v-prediction)
    sd2, _, _ = call(CheckpointLoader, ctx, config_name="v1-inference.yaml", ckpt_name="sd2-tiny.safetensors")
    assert sd2.prediction_type == "epsilon"
    for name, problem in [("broken.yaml", "not a readable YAML"), ("other.yaml", "not an LDM config"),
                          ("missing.yaml", "no config"), ("../../etc/passwd.yaml", "")]:
        with pytest.raises(ValueError, match=problem or None) as caught:
            call(CheckpointLoader, ctx, config_name=name, ckpt_name="sd1-tiny.safetensors")
        assert problem == "" or "CheckpointLoader.config_name" in str(caught.value)


def test_vae_and_controlnet_loaders(tiny_tree, ctx):
    from sdgraph.nodes.sd.loaders import ControlNetLoader, VAELoader

    (vae,) = call(VAELoader, ctx, vae_name="tiny-vae.safetensors")
    _same(vae.slot.module, tiny_tree["sd1"].vae)
    (net,) = call(ControlNetLoader, ctx, control_net_name="tiny-controlnet")
    _same(net.module(), tiny_tree["controlnet"])


def test_file_loaded_once_and_again_when_changed(dirs, tmp_path):
    path = tmp_path / "copy.safetensors"
    shutil.copy(dirs.find_model("checkpoints", "sd1-tiny.safetensors"), path)
    mgr = ModelManager(force_cpu=True)
    first = load_checkpoint(path, mgr)
    assert load_checkpoint(path, mgr) is first and mgr.stats.disk_loads == 1
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert load_checkpoint(path, mgr) is not first and mgr.stats.disk_loads == 2
