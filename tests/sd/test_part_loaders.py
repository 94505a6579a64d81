"""Loaders for the parts users keep apart, each on tiny files in the real key layouts: a UNet-only file computes as
the checkpoint it came from; a text encoder file encodes as its checkpoint's CLIP; two text encoders give SDXL's
conditioning; a diffusers folder loads as the checkpoint loader loads it; a difference ControlNet is completed with
its MODEL's weights. Wrong files and choices get errors naming the input."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from sdgraph.nodes.sd import ldm_names
from sdgraph.nodes.sd.checkpoint_layout import UnsupportedCheckpoint
from sdgraph.nodes.sd.clip_file import TextEncoder, encoder_kind
from sdgraph.nodes.sd.loaders import CheckpointLoaderSimple, CLIPSetLastLayer, ControlNetLoader, LoraLoaderModelOnly
from sdgraph.nodes.sd.loading import load_checkpoint
from sdgraph.nodes.sd.part_loaders import (
    CLIPLoader, DiffControlNetLoader, DiffusersLoader, DualCLIPLoader, UNETLoader,
)
from sdgraph.nodes.sd.text_encoding import encode_prompt
from sdgraph.paths import Dirs

from conftest import call, make_ctx, unet_out
from tiny_models import SDXL_REFINER_UNET, SDXL_UNET, TEXT, _randomize, build_parts, clip_config, save_single_file

PROMPT = "a red (circle:1.3) on a blue square"
UNET = "model.diffusion_model."


def _save(path: Path, sd: dict[str, torch.Tensor]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path.name


def _deep_parts(kind: str, seed: int) -> Any:
    """Tiny parts whose text encoders have their released model's depth (24 layers for OpenCLIP-H, 32 for G), so
    a file of the text encoder alone is told apart as ComfyUI tells it; the SDXL UNet takes SGM's 256-wide time
    ids."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    parts = build_parts(kind, seed)
    torch.manual_seed(seed + 50)
    if kind == "sd2":
        parts.encoders = [CLIPTextModel(CLIPTextConfig(**clip_config("gelu", 24)))]
    else:
        parts.unet = UNet2DConditionModel(**dict(SDXL_UNET, addition_time_embed_dim=256,
                                                 projection_class_embeddings_input_dim=TEXT + 6 * 256))
        parts.encoders[1] = CLIPTextModelWithProjection(CLIPTextConfig(**clip_config("gelu", 32)))
    for module in (parts.unet, *parts.encoders):
        _randomize(module)
        module.eval()
    return parts


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, tiny_tree: dict[str, Any]) -> dict[str, Any]:
    """A user folder: checkpoints with deep text encoders, and the parts of these and the shared tiny ones."""
    base = tmp_path_factory.mktemp("parts_home")
    models = base / "models"
    shared = tiny_tree["root"] / "models" / "checkpoints"
    sd2, sdxl = _deep_parts("sd2", 11), _deep_parts("sdxl", 12)
    (models / "checkpoints").mkdir(parents=True)
    save_single_file(models / "checkpoints" / "sd2-deep.safetensors", "sd2", sd2)
    save_single_file(models / "checkpoints" / "sdxl-deep.safetensors", "sdxl", sdxl)
    return {"base": base, "models": models, "shared": shared, "sd2": sd2, "sdxl": sdxl, "tree": tiny_tree}


@pytest.fixture
def pctx(home: dict[str, Any], manager: Any) -> Any:
    return make_ctx(Dirs(base=home["base"], extra_model_roots=[home["tree"]["root"] / "models"]), manager)


def _checkpoint(pctx: Any, name: str) -> tuple[Any, Any, Any]:
    return call(CheckpointLoaderSimple, pctx, ckpt_name=name)


def _file_state(pctx: Any, name: str) -> dict[str, torch.Tensor]:
    from sdgraph.nodes.sd.loading import read_state_dict

    return read_state_dict(pctx.dirs.find_model("checkpoints", name))


def _part(sd: dict[str, torch.Tensor], prefix: str, new_prefix: str = "") -> dict[str, torch.Tensor]:
    return {new_prefix + k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _sdxl_out(model: Any, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    width = model.slot.module.config.cross_attention_dim
    pooled_width = model.slot.module.config.projection_class_embeddings_input_dim - \
        (5 if model.is_sdxl_refiner else 6) * model.slot.module.config.addition_time_embed_dim
    x, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, width, generator=g)
    added = model.sdxl_added_cond(torch.randn(1, pooled_width, generator=g), {}, (8, 8), 1, torch.device("cpu"),
                                  torch.float32)
    with torch.inference_mode():
        return model.unet()(x, torch.tensor([500]), encoder_hidden_states=cond, added_cond_kwargs=added).sample.clone()


def _same_model(a: Any, b: Any) -> None:
    assert (a.prediction_type, a.is_sdxl, a.is_sdxl_refiner, a.latent_format, a.latent_channels) == \
        (b.prediction_type, b.is_sdxl, b.is_sdxl_refiner, b.latent_format, b.latent_channels)
    assert torch.equal(a.alphas_cumprod, b.alphas_cumprod)
    out = _sdxl_out if a.is_sdxl else unet_out
    expected = out(b)
    assert torch.equal(out(a), expected) and expected.abs().mean() > 0.01


# ---- UNETLoader -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint,folder,layout", [
    ("sd1-tiny.safetensors", "unet", "ldm"), ("sd1-tiny.safetensors", "diffusion_models", "diffusers"),
    ("sd2-tiny.safetensors", "diffusion_models", "ldm"), ("sd2-tiny.safetensors", "unet", "whole checkpoint"),
    ("sdxl-deep.safetensors", "unet", "ldm"), ("sdxl-deep.safetensors", "diffusion_models", "diffusers"),
])
def test_a_unet_file_computes_as_the_checkpoint_it_came_from(pctx, home, checkpoint, folder, layout):
    sd = _file_state(pctx, checkpoint)
    source = {"sd1": home["tree"]["sd1"], "sd2": home["tree"]["sd2"], "sdxl": home["sdxl"]}[checkpoint[:4].rstrip("-")]
    layouts = {"ldm": lambda: _part(sd, UNET), "whole checkpoint": lambda: sd,
               "diffusers": lambda: source.unet.state_dict()}
    name = _save(home["models"] / folder / f"{layout.replace(' ', '-')}-{checkpoint}", layouts[layout]())
    assert name in pctx.dirs.list_models("diffusion_models")
    (model,) = call(UNETLoader, pctx, unet_name=name, weight_dtype="default")
    _same_model(model, _checkpoint(pctx, checkpoint)[0])
    if checkpoint.startswith("sd2"):
        assert model.prediction_type == "v_prediction"  # the SD 2.x norm-bias heuristic, from the UNet alone


def test_the_refiner_unet_is_told_from_the_base(pctx, home):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(5)
    source = UNet2DConditionModel(**dict(SDXL_REFINER_UNET, addition_time_embed_dim=256,
                                         projection_class_embeddings_input_dim=TEXT + 5 * 256)).eval()
    _randomize(source)
    name = _save(home["models"] / "unet" / "refiner-unet.safetensors",
                 _part(ldm_names.unet_to_ldm(source.state_dict(), dict(source.config)), UNET))
    (model,) = call(UNETLoader, pctx, unet_name=name, weight_dtype="default")
    assert model.is_sdxl and model.is_sdxl_refiner and model.latent_format.scale_factor == 0.13025
    assert all(torch.equal(a, b) for a, b in zip(model.slot.module.state_dict().values(),
                                                 source.state_dict().values()))


def test_a_diffusers_unet_folder(pctx, home):
    source = home["tree"]["sd1"].unet
    source.save_pretrained(home["models"] / "unet" / "sd1-unet-folder")
    assert "sd1-unet-folder" in pctx.dirs.list_models("diffusion_models")
    (model,) = call(UNETLoader, pctx, unet_name="sd1-unet-folder", weight_dtype="default")
    _same_model(model, _checkpoint(pctx, "sd1-tiny.safetensors")[0])
    (narrow,) = call(UNETLoader, pctx, unet_name="sd1-unet-folder", weight_dtype="fp8_e5m2")
    assert {p.dtype for p in narrow.slot.module.parameters()} == {torch.float8_e5m2}
    assert torch.equal(unet_out(narrow), unet_out(_loaded_like(source, torch.float8_e5m2)))


def _loaded_like(unet: torch.nn.Module, dtype: torch.dtype) -> Any:
    """A MODEL-like handle on the fp8-rounded reference, for `unet_out`."""
    reference = _fp8_reference(unet, dtype)

    class Handle:
        slot = type("Slot", (), {"module": reference})

        def unet(self) -> torch.nn.Module:
            return reference

    return Handle()


def _fp8_reference(unet: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """The UNet with every floating-point weight rounded to `dtype` and back: what fp8 storage computes with."""
    copy = type(unet).from_config(unet.config).eval()
    copy.load_state_dict({k: v.to(dtype).float() for k, v in unet.state_dict().items()})
    return copy


@pytest.mark.parametrize("weight_dtype,dtype", [("fp8_e4m3fn", torch.float8_e4m3fn),
                                                ("fp8_e4m3fn_fast", torch.float8_e4m3fn),
                                                ("fp8_e5m2", torch.float8_e5m2)])
def test_fp8_weights_are_stored_narrow_and_widened_at_use(pctx, home, weight_dtype, dtype):
    name = _save(home["models"] / "unet" / "sd1-fp8.safetensors", _part(_file_state(pctx, "sd1-tiny.safetensors"), UNET))
    (default,) = call(UNETLoader, pctx, unet_name=name, weight_dtype="default")
    (narrow,) = call(UNETLoader, pctx, unet_name=name, weight_dtype=weight_dtype)
    assert {p.dtype for p in narrow.slot.module.parameters()} == {dtype}
    assert narrow.dtype() == torch.float32, "it computes in the manager's precision"
    assert narrow.slot.nbytes * 4 == default.slot.nbytes
    reference = _fp8_reference(home["tree"]["sd1"].unet, dtype)
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, TEXT, generator=g)
    with torch.inference_mode():
        expected = reference(x, torch.tensor([500]), encoder_hidden_states=cond).sample
    got = unet_out(narrow)
    assert torch.equal(got, expected)
    assert (got - unet_out(default)).abs().max() > 1e-3, "the rounding to fp8 shows"
    assert {p.dtype for p in narrow.slot.module.parameters()} == {dtype}, "a run leaves the weights narrow"


def test_fp8_weights_stream_layer_by_layer(home, pctx):
    """Streamed (lowvram) on a separate device, each layer's fp8 weights visit it and are widened there."""
    from sdgraph.models import ModelManager

    name = _save(home["models"] / "unet" / "sd1-fp8-stream.safetensors",
                 _part(_file_state(pctx, "sd1-tiny.safetensors"), UNET))
    resident = call(UNETLoader, pctx, unet_name=name, weight_dtype="fp8_e4m3fn")[0]
    streaming = ModelManager(force_cpu=True, simulated_device=True, lowvram=True)
    (streamed,) = call(UNETLoader, make_ctx(pctx.dirs, streaming), unet_name=name, weight_dtype="fp8_e4m3fn")
    assert torch.equal(unet_out(streamed), unet_out(resident))
    assert streaming.stats.layer_visits > 0 and streamed.slot.streamed
    assert {p.dtype for p in streamed.slot.module.parameters()} == {torch.float8_e4m3fn}


def test_a_lora_on_fp8_weights_rounds_the_patched_weight_back_to_fp8(pctx, home):
    name = _save(home["models"] / "unet" / "sd1-fp8-lora.safetensors",
                 _part(_file_state(pctx, "sd1-tiny.safetensors"), UNET))
    (narrow,) = call(UNETLoader, pctx, unet_name=name, weight_dtype="fp8_e4m3fn")
    plain = unet_out(narrow)
    (patched,) = call(LoraLoaderModelOnly, pctx, model=narrow, lora_name="tiny-lora.safetensors", strength_model=1.0)
    stored = {k: v.clone() for k, v in narrow.slot.module.state_dict().items()}
    changed = unet_out(patched)
    assert (changed - plain).abs().max() > 1e-3
    from sdgraph.models import lora_delta

    (patch,) = patched.patches
    module_name, (up, down, scale) = next(iter(patch.deltas.items()))
    weight = patched.slot.module.get_submodule(module_name).weight
    expected = (stored[module_name + ".weight"].float() + lora_delta(up, down, weight.shape, weight.device) * scale)
    assert weight.dtype == torch.float8_e4m3fn and torch.equal(weight.float(), expected.to(weight.dtype).float())
    assert torch.equal(unet_out(narrow), plain), "the unpatched model gets its stored weights back exactly"


def test_unet_loader_errors_name_the_input(pctx, home, tiny_tree):
    vae = _save(home["models"] / "unet" / "a-vae.safetensors",
                _part(_file_state(pctx, "sd1-tiny.safetensors"), "first_stage_model."))
    flux = _save(home["models"] / "diffusion_models" / "flux.safetensors",
                 {"double_blocks.0.img_attn.qkv.weight": torch.zeros(2, 2)})
    for name, message in ((vae, "a VAE"), (flux, "a transformer diffusion model"), ("nope.safetensors", "no model")):
        with pytest.raises(ValueError, match=rf"UNETLoader\.unet_name: .*{message}"):
            call(UNETLoader, pctx, unet_name=name, weight_dtype="default")
    with pytest.raises(ValueError, match=r"UNETLoader\.weight_dtype: 'fp4' is not one of"):
        call(UNETLoader, pctx, unet_name=vae, weight_dtype="fp4")


# ---- CLIPLoader and DualCLIPLoader ----------------------------------------------------------------------------


def _encode(clip: Any, text: str = PROMPT) -> tuple[torch.Tensor, torch.Tensor | None]:
    return encode_prompt(clip, text)


def _same_encoding(a: Any, b: Any, skips: tuple[int, ...] = (-1, -2), pooled: bool = True) -> None:
    for skip in skips:
        (a_skip,), (b_skip,) = call(CLIPSetLastLayer, None, clip=a, stop_at_clip_layer=skip), \
            call(CLIPSetLastLayer, None, clip=b, stop_at_clip_layer=skip)
        (cond_a, pooled_a), (cond_b, pooled_b) = _encode(a_skip), _encode(b_skip)
        assert torch.equal(cond_a, cond_b), skip
        assert (pooled_a is None) == (pooled_b is None)
        assert pooled_a is None or not pooled or torch.equal(pooled_a, pooled_b)
    cond, _ = _encode(a)
    assert torch.equal(cond, _encode(b)[0]) and cond.abs().mean() > 0.1


def _sd1_layouts(sd: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    text = _part(sd, "cond_stage_model.transformer.")  # text_model.*
    flat = {k.removeprefix("text_model."): v for k, v in text.items()}
    comfy_saved = {**text, "text_projection.weight": torch.eye(TEXT), "logit_scale": torch.tensor(4.6)}
    whole_clip = {**text, "vision_model.embeddings.patch_embedding.weight": torch.zeros(8, 3, 2, 2),
                  "text_projection.weight": torch.eye(TEXT), "visual_projection.weight": torch.eye(TEXT)}
    return {"text_model": text, "flattened": flat, "comfy_saved": comfy_saved, "whole_clip": whole_clip, "checkpoint": sd}


@pytest.mark.parametrize("layout", ["text_model", "flattened", "comfy_saved", "whole_clip", "checkpoint"])
def test_a_clip_l_file_encodes_as_the_sd1_checkpoint(pctx, home, layout):
    sd = _file_state(pctx, "sd1-tiny.safetensors")
    name = _save(home["models"] / "clip" / f"clip-l-{layout}.safetensors", _sd1_layouts(sd)[layout])
    assert name in pctx.dirs.list_models("text_encoders")
    (clip,) = call(CLIPLoader, pctx, clip_name=name, type="stable_diffusion")
    assert clip.specs[0].kind == "clip_l" and clip.embedding_dirs == tuple(pctx.dirs.model_roots("embeddings"))
    _same_encoding(clip, _checkpoint(pctx, "sd1-tiny.safetensors")[1])


def _open_clip_h_layouts(sd: dict[str, torch.Tensor], encoder: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    hf = {"text_model." + k.removeprefix("text_model."): v for k, v in encoder.state_dict().items()
          if not k.endswith("position_ids")}
    return {"open_clip": _part(sd, "cond_stage_model.model."), "text_model": hf}


@pytest.mark.parametrize("layout", ["open_clip", "text_model"])
def test_an_open_clip_h_file_encodes_as_the_sd2_checkpoint(pctx, home, layout):
    sd = _file_state(pctx, "sd2-deep.safetensors")
    name = _save(home["models"] / "text_encoders" / f"clip-h-{layout}.safetensors",
                 _open_clip_h_layouts(sd, home["sd2"].encoders[0])[layout])
    (clip,) = call(CLIPLoader, pctx, clip_name=name, type="stable_diffusion")
    assert clip.specs[0].kind == "clip_h" and clip.specs[0].pad_id == 0
    # -1 and the pooled output (which SD 2.x does not use) are left out: the checkpoint loader drops OpenCLIP-H's
    # last layer (as diffusers does); a CLIP-H file keeps it, as ComfyUI does
    _same_encoding(clip, _checkpoint(pctx, "sd2-deep.safetensors")[1], skips=(-2, -3), pooled=False)


def _sdxl_files(pctx: Any, home: dict[str, Any]) -> tuple[str, str]:
    sd = _file_state(pctx, "sdxl-deep.safetensors")
    clip_l = _save(home["models"] / "clip" / "sdxl-clip-l.safetensors", _part(sd, "conditioner.embedders.0.transformer."))
    clip_g = _save(home["models"] / "text_encoders" / "sdxl-clip-g.safetensors",
                   _part(sd, "conditioner.embedders.1.model."))
    return clip_l, clip_g


@pytest.mark.parametrize("order", ["l_then_g", "g_then_l"])
def test_dual_clip_loader_gives_the_sdxl_checkpoints_conditioning(pctx, home, order):
    clip_l, clip_g = _sdxl_files(pctx, home)
    first, second = (clip_l, clip_g) if order == "l_then_g" else (clip_g, clip_l)
    (clip,) = call(DualCLIPLoader, pctx, clip_name1=first, clip_name2=second, type="sdxl")
    assert [s.kind for s in clip.specs] == ["clip_l", "clip_g"] and clip.is_sdxl
    reference = _checkpoint(pctx, "sdxl-deep.safetensors")[1]
    cond, pooled = _encode(clip)
    assert cond.shape == (1, 77, 2 * TEXT) and pooled.shape == (1, TEXT)  # 768 + 1280 and 1280 on the real model
    _same_encoding(clip, reference)


def test_an_open_clip_g_file_alone_is_the_refiners_text_encoder(pctx, home):
    clip_l, clip_g = _sdxl_files(pctx, home)
    (alone,) = call(CLIPLoader, pctx, clip_name=clip_g, type="stable_diffusion")
    (both,) = call(DualCLIPLoader, pctx, clip_name1=clip_l, clip_name2=clip_g, type="sdxl")
    assert [s.kind for s in alone.specs] == ["clip_g"] and not alone.is_sdxl
    (cond, pooled), (cond_both, pooled_both) = _encode(alone), _encode(both)
    assert torch.equal(cond, cond_both[..., TEXT:]) and torch.equal(pooled, pooled_both)


def test_the_kind_of_a_text_encoder():
    assert [encoder_kind(768, 2), encoder_kind(1024, 2), encoder_kind(1280, 12)] == ["clip_l", "clip_h", "clip_g"]
    assert [encoder_kind(64, 12), encoder_kind(64, 23), encoder_kind(64, 31)] == ["clip_l", "clip_h", "clip_g"]
    # diffusers' SD 2.x text encoder stores 23 of OpenCLIP-H's 24 layers; a tiny model's depth is its own
    assert TextEncoder("clip_h", 23, 1024, None, "").missing_layers == 1
    assert TextEncoder("clip_h", 24, 1024, None, "").missing_layers == 0
    assert TextEncoder("clip_h", 23, 64, None, "").missing_layers == 0


def test_clip_loader_errors_name_the_input(pctx, home):
    clip_l, clip_g = _sdxl_files(pctx, home)
    with pytest.raises(ValueError, match=r"CLIPLoader\.type: 'sd3' is a text encoder recipe for a model family "
                                         r"sdgraph does not run.*choose stable_diffusion"):
        call(CLIPLoader, pctx, clip_name=clip_l, type="sd3")
    with pytest.raises(ValueError, match=r"CLIPLoader\.type: 'sdxl' is not one of"):
        call(CLIPLoader, pctx, clip_name=clip_l, type="sdxl")
    with pytest.raises(ValueError, match=r"DualCLIPLoader\.type: 'flux' is a text encoder recipe.*choose sdxl"):
        call(DualCLIPLoader, pctx, clip_name1=clip_l, clip_name2=clip_g, type="flux")
    with pytest.raises(ValueError, match=r"DualCLIPLoader: sdxl takes one CLIP-L and one OpenCLIP-G; clip_name1 "
                                         r"sdxl-clip-l.safetensors is CLIP-L, clip_name2 sdxl-clip-l.safetensors "
                                         r"is CLIP-L"):
        call(DualCLIPLoader, pctx, clip_name1=clip_l, clip_name2=clip_l, type="sdxl")
    unet = _save(home["models"] / "clip" / "a-unet.safetensors", _part(_file_state(pctx, "sd1-tiny.safetensors"), UNET))
    with pytest.raises(ValueError, match=r"CLIPLoader\.clip_name: a-unet\.safetensors: no text encoder keys"):
        call(CLIPLoader, pctx, clip_name=unet, type="stable_diffusion")
    whole = _save(home["models"] / "clip" / "sdxl-whole.safetensors", _file_state(pctx, "sdxl-deep.safetensors"))
    with pytest.raises(ValueError, match=r"DualCLIPLoader\.clip_name2: sdxl-whole\.safetensors: holds 2 text "
                                         r"encoders .*CheckpointLoaderSimple"):
        call(DualCLIPLoader, pctx, clip_name1=clip_l, clip_name2=whole, type="sdxl")
    with pytest.raises(ValueError, match=r"CLIPLoader\.clip_name: no model 'gone\.safetensors'"):
        call(CLIPLoader, pctx, clip_name="gone.safetensors", type="stable_diffusion")


def test_the_device_choice(pctx, home):
    from sdgraph.nodes.sd.part_loaders import _check_device

    clip_l, _ = _sdxl_files(pctx, home)
    (default,) = call(CLIPLoader, pctx, clip_name=clip_l, type="stable_diffusion")
    (cpu,) = call(CLIPLoader, pctx, clip_name=clip_l, type="stable_diffusion", device="cpu")
    assert torch.equal(_encode(default)[0], _encode(cpu)[0]), "on a CPU machine 'cpu' is where everything runs"
    with pytest.raises(ValueError, match=r"CLIPLoader\.device: 'cpu' \(a text encoder kept on the CPU while the rest "
                                         r"runs on cuda\) is not supported"):
        _check_device("CLIPLoader.device", "cpu", "cuda")
    with pytest.raises(ValueError, match=r"DualCLIPLoader\.device: 'gpu' is not one of"):
        call(DualCLIPLoader, pctx, clip_name1=clip_l, clip_name2=clip_l, type="sdxl", device="gpu")


# ---- DiffusersLoader ------------------------------------------------------------------------------------------


def test_diffusers_loader_reads_a_pipeline_folder(pctx, home):
    import shutil

    target = home["models"] / "diffusers" / "sub" / "tiny-pipeline"
    if not target.exists():
        shutil.copytree(home["shared"] / "sd1-tiny-diffusers", target)
    assert DiffusersLoader.inputs[0].current_choices(pctx.dirs) == ["sub/tiny-pipeline"]
    model, clip, vae = call(DiffusersLoader, pctx, model_path="sub/tiny-pipeline")
    ref_model, ref_clip, ref_vae = load_checkpoint(home["shared"] / "sd1-tiny-diffusers", pctx.models)
    assert torch.equal(unet_out(model), unet_out(ref_model))
    assert torch.equal(_encode(clip)[0], _encode(ref_clip)[0]) and clip.embedding_dirs
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(vae.encode(image), ref_vae.encode(image))
    with pytest.raises(ValueError, match=r"DiffusersLoader\.model_path: no diffusers folder 'sub'"):
        call(DiffusersLoader, pctx, model_path="sub")


# ---- DiffControlNetLoader -------------------------------------------------------------------------------------


def _difference_file(home: dict[str, Any], base: Any) -> str:
    """The tiny ControlNet in the original layout, minus the base UNet's weights where it copies them."""
    net = home["tree"]["controlnet"]
    sd = ldm_names.controlnet_to_ldm(net.state_dict(), net.config.layers_per_block)
    unet = _part(ldm_names.unet_to_ldm(base.state_dict(), dict(base.config)), UNET)
    diff = {k: v - unet[k[len("control_model."):]] if k[len("control_model."):] in unet else v for k, v in sd.items()}
    assert sum(k[len("control_model."):] in unet for k in sd) > 20
    return _save(home["models"] / "controlnet" / "diff-control.safetensors", {**diff, "difference": torch.zeros(0)})


def test_a_difference_controlnet_is_completed_with_its_model(pctx, home, sd1):
    model, _, _ = sd1
    name = _difference_file(home, home["tree"]["sd1"].unet)
    (net,) = call(DiffControlNetLoader, pctx, model=model, control_net_name=name)
    source = home["tree"]["controlnet"].state_dict()
    loaded = net.slot.module.state_dict()
    assert all(torch.allclose(loaded[k], v, atol=1e-6, rtol=0) for k, v in source.items())
    assert call(DiffControlNetLoader, pctx, model=model, control_net_name=name)[0] is net
    (patched,) = call(LoraLoaderModelOnly, pctx, model=model, lora_name="tiny-lora.safetensors", strength_model=1.0)
    (other,) = call(DiffControlNetLoader, pctx, model=patched, control_net_name=name)
    q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"
    assert not torch.allclose(other.slot.module.state_dict()[q], source[q], atol=1e-3), "the patched weights count"
    model.unet()  # the shared model's module carries no patch again, for the tests that read its weights
    with pytest.raises(UnsupportedCheckpoint, match=r"a difference ControlNet .*DiffControlNetLoader"):
        call(ControlNetLoader, pctx, control_net_name=name)


def test_any_other_controlnet_loads_as_controlnet_loader_loads_it(pctx, sd1):
    (plain,) = call(ControlNetLoader, pctx, control_net_name="tiny-controlnet")
    (given,) = call(DiffControlNetLoader, pctx, model=sd1[0], control_net_name="tiny-controlnet")
    assert given is plain
    with pytest.raises(ValueError, match=r"DiffControlNetLoader\.control_net_name: no model 'x\.pth'"):
        call(DiffControlNetLoader, pctx, model=sd1[0], control_net_name="x.pth")
