"""T2I-Adapter files (TencentARC's original layout and diffusers') through the ControlNet loader: the loaded adapter
computes the source's features, and at sampling time they enter the UNet's down blocks, scaled by strength."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from sdgraph.models import ModelManager
from sdgraph.nodes.sd.checkpoint_layout import UnsupportedCheckpoint
from sdgraph.nodes.sd.control import adapter_features, control_residuals
from sdgraph.nodes.sd.ldm_names import t2i_adapter_to_original
from sdgraph.nodes.sd.loading import load_controlnet
from sdgraph.nodes.sd.model_objects import ControlHint, T2IAdapterModel
from sdgraph.nodes.sd.t2i_adapter import read_t2i_adapter

from key_lists import reference_keys

TINY: dict[str, dict[str, Any]] = {
    "full": {"adapter_type": "full_adapter", "channels": [32, 64, 128, 128], "num_res_blocks": 2},
    "full_xl": {"adapter_type": "full_adapter_xl", "channels": [32, 64, 128, 128], "num_res_blocks": 1,
                "downscale_factor": 16},
    "light": {"adapter_type": "light_adapter", "channels": [32, 64, 128], "num_res_blocks": 1},
}
REAL: dict[str, tuple[dict[str, Any], int]] = {
    "full_sd14": ({"adapter_type": "full_adapter", "channels": [320, 640, 1280, 1280], "num_res_blocks": 2,
                   "downscale_factor": 8}, 2),
    "full_xl": ({"adapter_type": "full_adapter_xl", "channels": [320, 640, 1280, 1280], "num_res_blocks": 2,
                 "downscale_factor": 16}, 2),
    "light": ({"adapter_type": "light_adapter", "channels": [320, 640, 1280], "num_res_blocks": 4,
               "downscale_factor": 8}, 4),
}


def tiny_adapter(kind: str, seed: int = 0, in_channels: int = 3) -> torch.nn.Module:
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    adapter = T2IAdapter(in_channels=in_channels, **TINY[kind]).eval()
    with torch.no_grad():
        for p in adapter.parameters():
            p.mul_(3.0)  # default init gives features too small to tell apart from nothing
    return adapter


def write(path: Path, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> Path:
    sd = {k: v.to(dtype).contiguous() for k, v in sd.items()}
    save_file(sd, str(path)) if path.suffix == ".safetensors" else torch.save(sd, str(path))
    return path


def original(adapter: torch.nn.Module) -> dict[str, torch.Tensor]:
    return t2i_adapter_to_original(adapter.state_dict(), adapter.config.num_res_blocks)


def hint_image(seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(seed))


# ---- names and configs of real files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REAL))
def test_written_names_are_tencentarcs(name):
    from diffusers import T2IAdapter

    config, per_level = REAL[name]
    with torch.device("meta"):
        adapter = T2IAdapter(in_channels=3, **config)
    mine = {k: tuple(v.shape) for k, v in t2i_adapter_to_original(adapter.state_dict(), per_level).items()}
    assert mine == reference_keys(f"t2i_adapter_keys_{name}")


@pytest.mark.parametrize("name", list(REAL))
def test_full_size_config_from_real_key_layout(name):
    from diffusers import T2IAdapter

    sd = {k: torch.empty(s, device="meta") for k, s in reference_keys(f"t2i_adapter_keys_{name}").items()}
    config, weights = read_t2i_adapter(sd, f"t2iadapter_{name}.pth")
    assert config == dict(REAL[name][0], in_channels=3)
    with torch.device("meta"):
        built = T2IAdapter(**config)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in weights.items()}


# ---- loading computes what the source computes --------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TINY))
@pytest.mark.parametrize("layout", ["original", "diffusers"])
def test_adapter_features_match_the_source(tmp_path, manager, kind, layout):
    adapter = tiny_adapter(kind)
    sd = original(adapter) if layout == "original" else adapter.state_dict()
    path = write(tmp_path / f"t2iadapter_{kind}.{'pth' if layout == 'original' else 'safetensors'}", sd)
    loaded = load_controlnet(path, manager)
    assert isinstance(loaded, T2IAdapterModel) and loaded.unshuffle == TINY[kind].get("downscale_factor", 8)
    image = hint_image()
    mine = adapter_features(ControlHint(loaded, image, strength=0.5), (64, 64), 2, manager)
    with torch.inference_mode():
        source = adapter(image.movedim(-1, 1).expand(2, -1, -1, -1))
    assert len(mine) == len(source) == 4
    for a, b in zip(mine, source):
        assert torch.equal(a, 0.5 * b)
    assert float(source[-1].abs().mean()) > 0.01


def test_diffusers_adapter_folder(tmp_path, manager):
    adapter = tiny_adapter("light", seed=6)
    adapter.save_pretrained(tmp_path / "t2i-adapter-color")
    loaded = load_controlnet(tmp_path / "t2i-adapter-color", manager)
    image = hint_image(2)
    with torch.inference_mode():
        source = adapter(image.movedim(-1, 1))
    assert isinstance(loaded, T2IAdapterModel)
    mine = adapter_features(ControlHint(loaded, image), (64, 64), 1, manager)
    # bit-equal on some CPUs; on AVX-512 ones oneDNN picks another kernel for one conv (2e-5 on features ~1)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-4) for a, b in zip(mine, source))


def test_one_channel_adapter_reads_the_hint_in_grey(tmp_path, manager):
    adapter = tiny_adapter("full", seed=2, in_channels=1)
    loaded = load_controlnet(write(tmp_path / "t2iadapter_sketch_sd14v1.pth", original(adapter), torch.float16),
                             manager)
    image = hint_image(3)
    mine = adapter_features(ControlHint(loaded, image), (64, 64), 1, manager)
    with torch.inference_mode():
        half = type(adapter).from_config(adapter.config).eval()
        half.load_state_dict({k: v.half().float() for k, v in adapter.state_dict().items()})
        source = half(image.movedim(-1, 1).mean(1, keepdim=True))
    assert all(torch.equal(a, b) for a, b in zip(mine, source))


def test_hint_resized_to_the_picture_rounded_to_the_unshuffle(tmp_path, manager):
    loaded = load_controlnet(write(tmp_path / "xl.safetensors", tiny_adapter("full_xl").state_dict()), manager)
    features = adapter_features(ControlHint(loaded, hint_image()), (72, 56), 1, manager)  # -> 80 x 64 pixels
    assert features[0].shape[-2:] == (5, 4)


# ---- at sampling time ---------------------------------------------------------------------------------------


def test_features_enter_the_unet_scaled_by_strength(tmp_path, manager, sd1):
    model, _, _ = sd1
    loaded = load_controlnet(write(tmp_path / "t2iadapter_tiny.pth", original(tiny_adapter("full", seed=4))),
                             manager)
    image, x, t = hint_image(), torch.randn(1, 4, 8, 8), torch.tensor([500])
    cond = torch.randn(1, 77, model.slot.module.config.cross_attention_dim)
    full = control_residuals(ControlHint(loaded, image, 1.0), x, t, cond, 0.3, manager)
    half = control_residuals(ControlHint(loaded, image, 0.5), x, t, cond, 0.3, manager)
    assert set(full) == {"down_intrablock_additional_residuals"}
    assert all(torch.equal(a * 0.5, b) for a, b in zip(full["down_intrablock_additional_residuals"],
                                                       half["down_intrablock_additional_residuals"]))
    late = ControlHint(loaded, image, 1.0, start_percent=0.0, end_percent=0.2)
    assert control_residuals(late, x, t, cond, 0.3, manager) == {}
    with torch.inference_mode():
        unet = model.unet()
        plain = unet(x, t, encoder_hidden_states=cond).sample
        guided = unet(x, t, encoder_hidden_states=cond, **full).sample
    assert (guided - plain).abs().max() > 1e-3


def test_adapter_and_controlnet_chain(tmp_path, manager, tiny_tree, dirs):
    adapter = load_controlnet(write(tmp_path / "t2i.safetensors", tiny_adapter("full").state_dict()), manager)
    net = load_controlnet(dirs.find_model("controlnet", "tiny-controlnet"), manager)
    image, x, t, cond = hint_image(), torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, 64)
    both = control_residuals(ControlHint(adapter, image, previous=ControlHint(net, image)), x, t, cond, 0.5, manager)
    alone = control_residuals(ControlHint(net, image), x, t, cond, 0.5, manager)
    assert set(both) == {"down_intrablock_additional_residuals", "down_block_additional_residuals",
                         "mid_block_additional_residual"}
    assert torch.equal(both["mid_block_additional_residual"], alone["mid_block_additional_residual"])


# ---- files diffusers' adapter cannot hold ----------------------------------------------------------------------


@pytest.mark.parametrize("change,message", [
    (lambda sd: sd.update({"body.1.skep.weight": torch.zeros(32, 32, 1, 1)}), r"skip or strided-conv downsample"),
    (lambda sd: sd.update({"body.0.block2.weight": torch.zeros(32, 32, 3, 3)}), r"3x kernels; expected 4 levels"),
    (lambda sd: sd.pop("body.3.block1.bias"), r"weights do not fit the T2I-Adapter"),
])
def test_unsupported_adapters_are_refused(tmp_path, manager, change, message):
    sd = original(tiny_adapter("full"))
    change(sd)
    with pytest.raises(UnsupportedCheckpoint, match=r"odd\.pth: .*" + message):
        load_controlnet(write(tmp_path / "odd.pth", sd), manager)


# ---- a workflow -----------------------------------------------------------------------------------------------


def test_controlnet_apply_workflow_with_an_adapter(tmp_path, tiny_tree):
    """An original-layout adapter and the same adapter in diffusers' layout give the same picture; it differs
    from the picture without it. (Negative conditioning carries no adapter: the batch stacks zeros for it.)"""
    import numpy as np

    from test_controlnet_layouts import control_pictures

    base = tmp_path / "home"
    (base / "models" / "controlnet").mkdir(parents=True)
    adapter = tiny_adapter("full", seed=5)
    write(base / "models" / "controlnet" / "t2iadapter_tiny.pth", original(adapter))
    write(base / "models" / "controlnet" / "t2iadapter_tiny_diffusers.safetensors", adapter.state_dict())
    picture = control_pictures(base, tiny_tree, "square")

    original_file, diffusers_file = picture("t2iadapter_tiny.pth"), picture("t2iadapter_tiny_diffusers.safetensors")
    assert np.array_equal(original_file, diffusers_file)
    assert np.abs(original_file - picture("t2iadapter_tiny.pth", 0.0)).mean() > 2.0
