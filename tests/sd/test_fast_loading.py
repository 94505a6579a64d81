"""Loading without random initialisation: same models as building then loading, nothing left on the meta
device, clear errors for incomplete files, weights cast to the manager's dtype as they are read."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdgraph.models import ModelManager
from sdgraph.nodes.sd.checkpoint_layout import SD2_CLIP, SDXL_CLIP_G, UnsupportedCheckpoint, read_layout
from sdgraph.nodes.sd.empty_init import assign_weights, empty_weights
from sdgraph.nodes.sd.loading import load_checkpoint, load_vae
from sdgraph.nodes.sd.text_precision import round_weights_to_half
from sdgraph.nodes.sd.weight_file import open_weights

FILES = ["sd1-tiny.safetensors", "sd2-tiny.safetensors", "sdxl-tiny.safetensors"]


def _old_load(path: Path) -> tuple[torch.nn.Module, torch.nn.Module, list[torch.nn.Module]]:
    """The previous path: construct (random init), then copy the converted weights in."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as su
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    sd = load_file(str(path))
    layout = read_layout(sd, path.name)
    unet = UNet2DConditionModel(**layout.unet)
    unet.load_state_dict(su.convert_ldm_unet_checkpoint(sd, layout.unet), strict=False)
    vae = AutoencoderKL(**layout.vae)
    vae.load_state_dict(su.convert_ldm_vae_checkpoint(sd, layout.vae), strict=False)
    encoders = []
    for cfg in layout.text_encoders:
        cls = CLIPTextModelWithProjection if cfg.get("class") == "CLIPTextModelWithProjection" else CLIPTextModel
        model = cls(CLIPTextConfig(**{k: v for k, v in cfg.items() if k not in ("kind", "class")}))
        if cfg["kind"] == "clip_l":
            weights = su.convert_ldm_clip_checkpoint(sd)
        else:
            prefix = SD2_CLIP if layout.family == "sd2" else SDXL_CLIP_G
            weights = su.convert_open_clip_checkpoint(model, sd, prefix=prefix)
        if not hasattr(model, "text_model"):
            weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
        model.load_state_dict(weights, strict=False)
        encoders.append(model)
    return unet, vae, encoders


def _unet_out(unet: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    cond = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)
    extra = {}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, pooled, generator=g),
                                       "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}}
    return unet(x, torch.tensor([500]), encoder_hidden_states=cond, **extra).sample


def _vae_out(vae: torch.nn.Module) -> torch.Tensor:
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return vae.decode(vae.encode(pixels).latent_dist.mean).sample


def _text_out(encoder: torch.nn.Module) -> torch.Tensor:
    tokens = torch.tensor([[49406, 320, 1929, 49407] + [49407] * 73])
    out = encoder(tokens, output_hidden_states=True)
    return torch.cat([out.hidden_states[-2].flatten(), out.last_hidden_state.flatten()])


def _not_on_cpu(module: torch.nn.Module) -> list[str]:
    return [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.device.type != "cpu"]


@pytest.mark.parametrize("name", FILES)
def test_same_outputs_as_construct_then_load(dirs, name):
    path = dirs.find_model("checkpoints", name)
    model, clip, vae = load_checkpoint(path, ModelManager(force_cpu=True))
    old_unet, old_vae, old_encoders = _old_load(path)
    with torch.inference_mode():
        assert torch.equal(_unet_out(model.slot.module), _unet_out(old_unet.eval()))
        assert torch.equal(_vae_out(vae.slot.module), _vae_out(old_vae.eval()))
        for slot, old in zip(clip.encoders, old_encoders, strict=True):
            round_weights_to_half(old)  # text encoders keep fp16 values (nodes/sd/text_precision.py)
            assert torch.equal(_text_out(slot.module), _text_out(old.eval()))


@pytest.mark.parametrize("name", FILES)
def test_nothing_left_on_the_meta_device(dirs, name):
    model, clip, vae = load_checkpoint(dirs.find_model("checkpoints", name), ModelManager(force_cpu=True))
    for module in (model.slot.module, vae.slot.module, *(s.module for s in clip.encoders)):
        assert _not_on_cpu(module) == []
    for slot in clip.encoders:
        ids = dict(slot.module.named_buffers())
        position_ids = next(v for k, v in ids.items() if k.endswith("position_ids"))
        assert torch.equal(position_ids.flatten(), torch.arange(position_ids.numel()))


def _without(source: Path, target: Path, key: str) -> Path:
    sd = load_file(str(source))
    del sd[key]
    save_file(sd, str(target))
    return target


@pytest.mark.parametrize("key,part", [
    ("model.diffusion_model.input_blocks.1.1.proj_in.weight", "UNet"),
    ("first_stage_model.decoder.conv_out.bias", "VAE"),
    ("cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.weight", "text encoder clip_l"),
])
def test_missing_tensor_is_named(dirs, tmp_path, key, part):
    path = _without(dirs.find_model("checkpoints", "sd1-tiny.safetensors"), tmp_path / "broken.safetensors", key)
    with pytest.raises(UnsupportedCheckpoint, match=part) as info:
        load_checkpoint(path, ModelManager(force_cpu=True))
    assert str(info.value).startswith(f"broken.safetensors: {part}: 1 weights missing, e.g. [")


def test_missing_vae_tensor_in_a_vae_file(dirs, tmp_path):
    source = dirs.find_model("vae", "tiny-vae.safetensors")
    path = _without(source, tmp_path / "vae.safetensors", "decoder.conv_in.weight")
    with pytest.raises(UnsupportedCheckpoint, match=r"vae.safetensors: VAE: 1 weights missing, e.g. \['decoder.conv_in.weight'\]"):
        load_vae(path, ModelManager(force_cpu=True))


def test_wrong_shape_is_named():
    with empty_weights():
        module = torch.nn.Linear(3, 2)
    message = r"lin: 1 weights of the wrong shape, e.g. \['weight \(2, 4\) \(expected \(2, 3\)\)'\]"
    with pytest.raises(UnsupportedCheckpoint, match=message):
        assign_weights(module, {"weight": torch.zeros(2, 4), "bias": torch.zeros(2)}, "lin")


class _RecordingManager(ModelManager):
    """Records each module's dtypes as the loader hands it over (before `manage` casts anything)."""

    def __init__(self, dtypes: dict[str, torch.dtype], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dtypes = dtypes
        self.handed: dict[str, set[torch.dtype]] = {}

    def dtype_for_role(self, role: str) -> torch.dtype:
        return self.dtypes.get(role, torch.float32)

    def manage(self, module: torch.nn.Module, name: str, role: str = "other") -> Any:
        self.handed[role] = {p.dtype for p in module.parameters()}
        return super().manage(module, name, role)


@pytest.mark.parametrize("dtypes", [{}, {"unet": torch.float16, "vae": torch.bfloat16}])
def test_fp16_file_loads_as_the_managers_dtype(dirs, tmp_path, dtypes):
    source = dirs.find_model("checkpoints", "sd1-tiny.safetensors")
    half = tmp_path / "half.safetensors"
    save_file({k: v.half() for k, v in load_file(str(source)).items()}, str(half))
    manager = _RecordingManager(dtypes, force_cpu=True)
    model, clip, vae = load_checkpoint(half, manager)
    assert manager.handed == {role: {dtypes.get(role, torch.float32)} for role in ("unet", "vae", "text_encoder")}
    file_value = load_file(str(half))["model.diffusion_model.out.2.weight"]
    assert torch.equal(model.slot.module.conv_out.weight, file_value.to(dtypes.get("unet", torch.float32)))


# ---- the reader ---------------------------------------------------------------------------------------------


def test_cast_copies_into_memory_of_its_own(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.arange(6, dtype=torch.float16).reshape(2, 3), "ids": torch.arange(4)}, str(path))
    weights = open_weights(path)
    fp32 = weights.cast(torch.float32)
    a, ids = fp32["a"], fp32["ids"]
    assert a.dtype == torch.float32 and ids.dtype == torch.int64 and a.is_contiguous()
    same = weights.cast(torch.float16)["a"]
    same.add_(100)
    assert torch.equal(weights["a"], torch.arange(6, dtype=torch.float16).reshape(2, 3))
    assert same.untyped_storage().data_ptr() != weights["a"].untyped_storage().data_ptr()
    assert list(weights) == ["a", "ids"] and "a" in weights and "b" not in weights
    with pytest.raises(KeyError):
        weights["b"]


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickled_checkpoints_are_read(tmp_path, zip_format):
    path = tmp_path / "w.ckpt"
    torch.save({"state_dict": {"a": torch.ones(3), "step": 7}}, str(path), _use_new_zipfile_serialization=zip_format)
    weights = open_weights(path)
    assert list(weights) == ["a"] and torch.equal(weights.cast(torch.float16)["a"], torch.ones(3).half())


# ---- the empty construction -------------------------------------------------------------------------------


class _DerivedBuffer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))
        self.register_buffer("scale", self.weight * 2, persistent=False)  # made from a parameter: meta too


def test_parameters_on_meta_buffers_real_and_patch_removed():
    from transformers import CLIPTextConfig, CLIPTextModel

    original = torch.nn.Module.register_parameter
    with empty_weights():
        model = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                             num_attention_heads=1, max_position_embeddings=77))
    assert all(p.is_meta for p in model.parameters())
    assert all(not b.is_meta for b in model.buffers())
    assert torch.nn.Module.register_parameter is original
    assert not torch.nn.Linear(2, 2).weight.is_meta


def test_other_threads_build_for_real():
    built: list[torch.nn.Module] = []
    started, release = threading.Event(), threading.Event()

    def other() -> None:
        started.wait()
        built.append(torch.nn.Linear(2, 2))
        release.set()

    thread = threading.Thread(target=other)
    thread.start()
    with empty_weights():
        started.set()
        release.wait(10)
        mine = torch.nn.Linear(2, 2)
    thread.join()
    assert mine.weight.is_meta and not built[0].weight.is_meta


def test_a_tensor_left_on_meta_is_an_error():
    with empty_weights():
        module = _DerivedBuffer()
    with pytest.raises(ValueError, match=r"derived: 1 tensors left without data on the meta device, e.g. \['scale'\]"):
        assign_weights(module, {"weight": torch.ones(3)}, "derived")


def test_assigned_tensors_are_the_parameters():
    weight, bias = torch.randn(2, 3), torch.randn(2)
    with empty_weights():
        module = torch.nn.Linear(3, 2)
    assign_weights(module, {"weight": weight, "bias": bias}, "lin")
    assert module.weight.data_ptr() == weight.data_ptr() and isinstance(module.weight, torch.nn.Parameter)
    assert module.weight.requires_grad


# ---- diffusers folders ----------------------------------------------------------------------------------------

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "sdgraph" / "data" / "models" / "checkpoints" / "sdgraph-tiny"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_folder_parts_are_what_from_pretrained_gives(dtype):
    """The default model's parts built on the meta device: the same tensors, dtypes, configs and outputs."""
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers.models.clip.modeling_clip import CLIPTextModel

    from sdgraph.nodes.sd.loading import _pretrained_text_encoder, diffusers_part

    for cls, part in ((UNet2DConditionModel, "unet"), (AutoencoderKL, "vae")):
        old = cls.from_pretrained(DEFAULT_MODEL / part, local_files_only=True, torch_dtype=dtype)
        new = diffusers_part(cls, DEFAULT_MODEL / part, dtype)
        _same_tensors(old, new)
        assert dict(old.config) == dict(new.config) and not new.training
    old = CLIPTextModel.from_pretrained(DEFAULT_MODEL / "text_encoder", local_files_only=True, dtype=dtype)
    new = _pretrained_text_encoder(DEFAULT_MODEL / "text_encoder", dtype)
    _same_tensors(old, new)
    assert old.config.to_dict() == new.config.to_dict() and not new.training
    ids = torch.tensor([[49406, 320, 1000, 49407] + [49407] * 73])
    with torch.no_grad():
        assert torch.equal(old(ids).last_hidden_state, new(ids).last_hidden_state)


def test_a_folder_part_the_meta_path_cannot_fill_loads_with_from_pretrained(tmp_path):
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    from sdgraph.nodes.sd.loading import diffusers_part

    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text((DEFAULT_MODEL / "vae" / "config.json").read_text())
    weights = load_file(str(DEFAULT_MODEL / "vae" / "diffusion_pytorch_model.safetensors"))
    save_file({k: v for k, v in weights.items() if k != "decoder.conv_out.bias"},
              str(folder / "diffusion_pytorch_model.safetensors"))
    vae = diffusers_part(AutoencoderKL, folder, torch.float32)  # from_pretrained fills the missing one itself
    assert not any(t.is_meta for t in vae.state_dict().values())
    assert torch.equal(vae.encoder.conv_in.weight, weights["encoder.conv_in.weight"].float())


def _same_tensors(old: torch.nn.Module, new: torch.nn.Module) -> None:
    a, b = old.state_dict(), new.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
    buffers_old, buffers_new = dict(old.named_buffers()), dict(new.named_buffers())
    assert buffers_old.keys() == buffers_new.keys()
    assert all(torch.equal(buffers_old[k], buffers_new[k]) for k in buffers_old)
