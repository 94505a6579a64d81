"""ControlNet files in every layout users have: original (lllyasviel, `control_model.*`, `.pth` or `.safetensors`,
with or without the prefix) and diffusers single files without a config; the loaded net computes what the
source net computes. Bad files get errors naming the file and what was expected."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from sdgraph.models import ModelManager
from sdgraph.nodes.sd.checkpoint_layout import UnsupportedCheckpoint
from sdgraph.nodes.sd.control import control_residuals
from sdgraph.nodes.sd.controlnet_layout import read_controlnet
from sdgraph.nodes.sd.ldm_names import controlnet_to_ldm
from sdgraph.nodes.sd.loading import load_controlnet
from sdgraph.nodes.sd.model_objects import ControlHint

from key_lists import reference_keys

CONTEXT = 32
POOLED = 32
SD1: dict[str, Any] = {"block_out_channels": (32, 64), "layers_per_block": 1, "cross_attention_dim": CONTEXT,
                       "attention_head_dim": 8, "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D")}
SD2: dict[str, Any] = dict(SD1, block_out_channels=(64, 128), attention_head_dim=[1, 2], use_linear_projection=True,
                           down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"))
SDXL: dict[str, Any] = dict(SD2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                            transformer_layers_per_block=[1, 2], addition_embed_type="text_time",
                            addition_time_embed_dim=8, projection_class_embeddings_input_dim=POOLED + 6 * 8)
CONFIGS = {"sd1": SD1, "sd2": SD2, "sdxl": SDXL}
SD15_FULL: dict[str, Any] = {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2,
                             "cross_attention_dim": 768, "attention_head_dim": 8}
SDXL_FULL: dict[str, Any] = {
    "block_out_channels": (320, 640, 1280), "layers_per_block": 2, "cross_attention_dim": 2048,
    "attention_head_dim": [5, 10, 20],
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": True, "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816}


def tiny_controlnet(kind: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A random-weight ControlNet whose zero-initialised weights (zero convolutions, norm biases) are not zero."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel(**dict(CONFIGS[kind], **overrides)).eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.1)
    return net


def original_layout(net: torch.nn.Module, prefix: str = "control_model.") -> dict[str, torch.Tensor]:
    return controlnet_to_ldm(net.state_dict(), net.config.layers_per_block, prefix)


def write(path: Path, sd: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> Path:
    sd = {k: v.to(dtype).contiguous() for k, v in sd.items()}
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return path


def residuals(net: Any, kind: str, manager: ModelManager | None = None) -> list[torch.Tensor]:
    """Every residual a ControlNet adds, through the sampling-time path (`control_residuals`) when `net` is a
    loaded CONTROL_NET, or a plain call of a diffusers module."""
    g = torch.Generator().manual_seed(7)
    x, cond = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 6, CONTEXT, generator=g)
    image, t = torch.rand(1, 64, 64, 3, generator=g), torch.tensor([500, 300])
    added = ({"text_embeds": torch.randn(2, POOLED, generator=g), "time_ids": torch.rand(2, 6, generator=g) * 1024}
             if kind == "sdxl" else None)
    if isinstance(net, torch.nn.Module):
        with torch.inference_mode():
            hint = image.movedim(-1, 1).expand(2, -1, -1, -1)
            down, mid = net(x, t, encoder_hidden_states=cond, controlnet_cond=hint, added_cond_kwargs=added,
                            return_dict=False)
    else:
        out = control_residuals(ControlHint(net, image), x, t, cond, 0.5, manager, added_cond_kwargs=added)
        down, mid = out["down_block_additional_residuals"], out["mid_block_additional_residual"]
    return [*down, mid]


def assert_same(loaded: list[torch.Tensor], source: list[torch.Tensor]) -> None:
    assert len(loaded) == len(source)
    for a, b in zip(loaded, source):
        assert a.shape == b.shape and torch.equal(a, b)
    assert sum(float(b.abs().mean()) for b in source) > 0.1, "the source residuals are not trivially zero"


def half_rounded(net: torch.nn.Module) -> torch.nn.Module:
    """The source net with its weights rounded through float16, as an fp16 file holds them."""
    copy = type(net).from_config(net.config).eval()
    copy.load_state_dict({k: v.half().float() for k, v in net.state_dict().items()})
    return copy


# ---- the names written here are the names in real files -------------------------------------------------------


@pytest.mark.parametrize("name,config", [("sd15", SD15_FULL), ("sdxl", SDXL_FULL)])
def test_written_names_are_lllyasviels(name, config):
    from diffusers import ControlNetModel

    with torch.device("meta"):
        net = ControlNetModel(**config)
    mine = {k: tuple(v.shape) for k, v in controlnet_to_ldm(net.state_dict(), 2, prefix="").items()}
    assert mine == reference_keys(f"controlnet_keys_{name}")


@pytest.mark.parametrize("name,config", [("sd15", SD15_FULL), ("sdxl", SDXL_FULL)])
def test_full_size_config_from_real_key_layout(name, config):
    """The config of an SD1.5 / SDXL ControlNet read from its real key names and shapes (meta tensors, no memory)."""
    from diffusers import ControlNetModel

    keys = reference_keys(f"controlnet_keys_{name}")
    sd = {"control_model." + k: torch.empty(shape, device="meta") for k, shape in keys.items()}
    cfg, weights = read_controlnet(sd, f"control_{name}.pth")
    for key, value in config.items():
        assert cfg[key] == (list(value) if isinstance(value, tuple) else value), key
    assert cfg["conditioning_embedding_out_channels"] == [16, 32, 96, 256] and cfg["conditioning_channels"] == 3
    with torch.device("meta"):
        built = ControlNetModel.from_config(cfg)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in weights.items()}


# ---- original layout ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_original_layout_safetensors_computes_as_the_source(tmp_path, manager, kind):
    net = tiny_controlnet(kind)
    path = write(tmp_path / f"control_{kind}_tiny.safetensors", original_layout(net))
    loaded = load_controlnet(path, manager)
    assert_same(residuals(loaded, kind, manager), residuals(net, kind))


def test_original_layout_pth_fp16(tmp_path, manager):
    net = tiny_controlnet("sd1", seed=3)
    path = write(tmp_path / "control_v11p_sd15_tiny_fp16.pth", original_layout(net), torch.float16)
    assert_same(residuals(load_controlnet(path, manager), "sd1", manager), residuals(half_rounded(net), "sd1"))


def test_original_layout_without_prefix(tmp_path, manager):
    net = tiny_controlnet("sd2", seed=4)
    path = write(tmp_path / "controlnet_sd21_tiny.safetensors", original_layout(net, prefix=""))
    assert_same(residuals(load_controlnet(path, manager), "sd2", manager), residuals(net, "sd2"))


def test_controlnet_beside_a_whole_checkpoint(tmp_path, manager, tiny_tree):
    """ControlNet 1.0 files hold a whole SD checkpoint next to `control_model.*`; only the latter is read."""
    from tiny_models import single_file_state

    net = tiny_controlnet("sd1", seed=5)
    sd = {**single_file_state("sd1", tiny_tree["sd1"]), **original_layout(net)}
    path = write(tmp_path / "control_sd15_tiny.pth", sd)
    assert_same(residuals(load_controlnet(path, manager), "sd1", manager), residuals(net, "sd1"))


# ---- diffusers layout, no config ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl"])
def test_diffusers_single_file_without_config(tmp_path, manager, kind):
    net = tiny_controlnet(kind, seed=6, conditioning_embedding_out_channels=(8, 16, 16, 24))
    path = write(tmp_path / "diffusion_pytorch_model.safetensors", net.state_dict(), torch.float16)
    loaded = load_controlnet(path, manager)
    assert loaded.module(manager).config.conditioning_embedding_out_channels == [8, 16, 16, 24]
    assert_same(residuals(loaded, kind, manager), residuals(half_rounded(net), kind))


def test_config_beside_a_diffusers_file_still_decides(tmp_path, manager):
    """4 heads per block cannot be read from the weights (the SD 1.x rule says 8): the config.json beside wins."""
    net = tiny_controlnet("sd1", seed=9, attention_head_dim=4)
    net.save_config(tmp_path)
    path = write(tmp_path / "diffusion_pytorch_model.safetensors", net.state_dict())
    loaded = load_controlnet(path, manager)
    assert loaded.module(manager).config.attention_head_dim == 4
    assert_same(residuals(loaded, "sd1", manager), residuals(net, "sd1"))


def test_shuffle_files_pool_their_residuals(tmp_path, manager):
    net = tiny_controlnet("sd1", seed=10)
    path = write(tmp_path / "control_v11e_sd15_shuffle.safetensors", original_layout(net))
    out = residuals(load_controlnet(path, manager), "sd1", manager)
    assert all(r.shape[-2:] == (1, 1) for r in out)


# ---- bad files ------------------------------------------------------------------------------------------------


def test_a_checkpoint_is_not_a_controlnet(dirs, manager):
    path = dirs.find_model("checkpoints", "sd1-tiny.safetensors")
    with pytest.raises(UnsupportedCheckpoint, match=r"sd1-tiny\.safetensors: a Stable Diffusion checkpoint .*"
                                                    r"not a ControlNet; expected a ControlNet"):
        load_controlnet(path, manager)


def test_a_diffusers_unet_is_not_a_controlnet(tmp_path, manager, tiny_tree):
    path = write(tmp_path / "unet.safetensors", tiny_tree["sd1"].unet.state_dict())
    with pytest.raises(UnsupportedCheckpoint, match=r"unet\.safetensors: a diffusers UNet"):
        load_controlnet(path, manager)


@pytest.mark.parametrize("drop,message", [
    ("control_model.zero_convs.2.0.weight", r"2 weights missing, e\.g\. controlnet_down_blocks\.2\.weight"),
    ("control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", r"missing, e\.g\. .*attn2\.to_k"),
    ("control_model.input_hint_block.14.weight", r"missing controlnet_cond_embedding\.conv_out\.weight"),
    ("control_model.time_embed.0.weight", r"missing time_embed\.0\.weight"),
])
def test_truncated_original_file(tmp_path, manager, drop, message):
    sd = original_layout(tiny_controlnet("sd1"))
    del sd[drop]
    if "zero_convs" in drop:
        del sd[drop.replace("weight", "bias")]
    path = write(tmp_path / "truncated.safetensors", sd)
    with pytest.raises(UnsupportedCheckpoint, match=r"truncated\.safetensors: an incomplete ControlNet.*" + message):
        load_controlnet(path, manager)


@pytest.mark.parametrize("drop,message", [
    ("down_blocks.0.attentions.0.proj_out.weight", r"an incomplete ControlNet, 1 weights missing, e\.g\. down_blocks"),
    ("down_blocks.1.", r"weights do not fit the ControlNet they describe"),  # a whole level: the shapes disagree
])
def test_truncated_diffusers_file(tmp_path, manager, drop, message):
    sd = {k: v for k, v in tiny_controlnet("sd1").state_dict().items() if not k.startswith(drop)}
    path = write(tmp_path / "cut.safetensors", sd)
    with pytest.raises(UnsupportedCheckpoint, match=r"cut\.safetensors: " + message):
        load_controlnet(path, manager)


def test_difference_controlnet_is_refused(tmp_path, manager):
    sd = {**original_layout(tiny_controlnet("sd1")), "difference": torch.zeros(1)}
    with pytest.raises(UnsupportedCheckpoint, match=r"diff\.pth: a difference ControlNet"):
        load_controlnet(write(tmp_path / "diff.pth", sd), manager)


def test_unknown_file(tmp_path, manager):
    path = write(tmp_path / "mystery.safetensors", {"foo.weight": torch.zeros(2)})
    with pytest.raises(UnsupportedCheckpoint, match=r"mystery\.safetensors: no ControlNet keys \(first keys: "
                                                    r"foo\.weight\); expected a ControlNet: original-layout keys"):
        load_controlnet(path, manager)


# ---- a workflow ---------------------------------------------------------------------------------------------


def controlnet_workflow(control_net: str, strength: float) -> dict[str, Any]:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1-tiny.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a circle", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": control_net}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "hint.png"}},
        "6": {"class_type": "ControlNetApply", "inputs": {"conditioning": ["2", 0], "control_net": ["4", 0],
                                                          "image": ["5", 0], "strength": strength}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 2, "cfg": 5.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["6", 0], "negative": ["3", 0],
                                                   "latent_image": ["7", 0], "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "cn/test"}},
    }


def control_pictures(base: Path, tiny_tree: dict[str, Any], hint_shape: str) -> Any:
    """`picture(control_net, strength) -> 8-bit pixels` of `controlnet_workflow` run in one executor over `base`
    (its models/controlnet/ files, and the tiny tree's models), with a white outline hint in input/."""
    import numpy as np
    from PIL import Image, ImageDraw

    from sdgraph.context import Services
    from sdgraph.execute import Executor
    from sdgraph.nodes.sd import conditioning, image, latent, loaders, sampling
    from sdgraph.paths import Dirs
    from sdgraph.registry import Registry

    (base / "input").mkdir(exist_ok=True)
    hint = Image.new("RGB", (64, 64))
    draw = ImageDraw.Draw(hint)
    (draw.ellipse if hint_shape == "circle" else draw.rectangle)((12, 12, 52, 52), outline=(255, 255, 255), width=3)
    hint.save(base / "input" / "hint.png")
    reg = Registry()
    for module in (loaders, conditioning, latent, image, sampling):
        reg.add_native(module.NODES, "sd")
    dirs = Dirs(base=base, extra_model_roots=[tiny_tree["root"] / "models"])
    executor = Executor(reg, Services(dirs=dirs, models=ModelManager(force_cpu=True)))

    def picture(control_net: str, strength: float = 1.0) -> np.ndarray:
        result = executor.run(controlnet_workflow(control_net, strength))
        assert result.ok, result.error
        record = result.outputs["10"]["images"][0]
        return np.asarray(Image.open(dirs.output / record["subfolder"] / record["filename"]), dtype=np.int16)

    return picture


def test_controlnet_apply_workflow_on_an_original_layout_file(tmp_path, tiny_tree):
    """The tiny ControlNet folder's weights written as an original-layout `.pth`: the same picture as the folder."""
    import numpy as np

    base = tmp_path / "home"
    (base / "models" / "controlnet").mkdir(parents=True)
    write(base / "models" / "controlnet" / "control_tiny_sd15.pth", original_layout(tiny_tree["controlnet"]))
    picture = control_pictures(base, tiny_tree, "circle")
    from_file, from_folder = picture("control_tiny_sd15.pth"), picture("tiny-controlnet")
    without = picture("control_tiny_sd15.pth", strength=0.0)
    assert np.array_equal(from_file, from_folder)
    assert np.abs(from_file - without).mean() > 5.0  # the hint changes the picture
