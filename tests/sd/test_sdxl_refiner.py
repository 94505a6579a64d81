"""The SDXL refiner on its tiny single file: detection, its CLIP-G, its time ids with the aesthetic score,
sampling, and the base + refiner two-stage workflow."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from sdgraph.context import InterruptFlag, NodeContext, Services
from sdgraph.execute import Executor
from sdgraph.nodes.sd.checkpoint_layout import UnsupportedCheckpoint, family_defaults, read_layout
from sdgraph.nodes.sd.conditioning import CLIPTextEncodeSDXLRefiner, TextEncode
from sdgraph.nodes.sd.latent import EmptyLatent, VAEDecode
from sdgraph.nodes.sd.loading import load_checkpoint, read_state_dict
from sdgraph.nodes.sd.sampling import KSampler
from sdgraph.nodes.sd.text_precision import round_weights_to_half

from conftest import call
from tiny_models import REFINER_TIME_DIM, TEXT
from test_workflow_residency import registry

REFINER = "sdxl-refiner-tiny.safetensors"
PROMPT = "a red circle"


@pytest.fixture(scope="module")
def refiner(dirs, manager) -> tuple[Any, Any, Any]:
    return load_checkpoint(dirs.find_model("checkpoints", REFINER), manager)


def _state(dirs, name: str = REFINER) -> dict[str, torch.Tensor]:
    return read_state_dict(dirs.find_model("checkpoints", name))


def test_detection_tells_base_from_refiner_and_reads_its_config(dirs):
    assert read_layout(_state(dirs, "sdxl-tiny.safetensors")).family == "sdxl"
    layout = read_layout(_state(dirs))
    assert layout.family == "sdxl_refiner" and layout.is_sdxl and layout.is_sdxl_refiner
    unet = layout.unet
    assert unet["block_out_channels"] == [32, 64, 64, 64] and unet["layers_per_block"] == 2
    assert unet["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    assert unet["transformer_layers_per_block"][1:] == [2, 2, 2]  # the mid block's depth rides on the last level
    assert unet["cross_attention_dim"] == TEXT
    assert unet["projection_class_embeddings_input_dim"] == TEXT + 5 * REFINER_TIME_DIM
    assert unet["addition_time_embed_dim"] == REFINER_TIME_DIM
    (clip_g,) = layout.text_encoders
    assert clip_g["kind"] == "clip_g" and clip_g["num_hidden_layers"] == 3 and clip_g["pad_token_id"] == 0
    assert layout.default_clip_skip == [-2] and layout.final_norm == [False]


def test_the_real_refiner_layout_gives_its_diffusers_config():
    """Shapes only (meta tensors, nothing allocated): sd_xl_refiner_1.0's keys infer the published config."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from sdgraph.nodes.sd import ldm_names

    defaults = family_defaults("sdxl_refiner")
    te = defaults["text_encoders"][0]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**defaults["unet"])
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**{k: v for k, v in te.items() if k not in ("kind", "class")}))
        sd = ldm_names.unet_to_ldm(unet.state_dict(), dict(unet.config))
        sd.update(ldm_names.open_clip_to_ldm(clip_g.state_dict(), "conditioner.embedders.0.model."))
        sd.update(ldm_names.vae_to_ldm(_meta_vae(defaults["vae"]).state_dict(), 4))
    layout = read_layout(sd, "sd_xl_refiner_1.0.safetensors")
    assert layout.family == "sdxl_refiner" and layout.prediction_type == "epsilon"
    assert layout.unet["block_out_channels"] == [384, 768, 1536, 1536]
    assert layout.unet["attention_head_dim"] == [6, 12, 24, 24]
    assert layout.unet["projection_class_embeddings_input_dim"] == 2560
    assert layout.unet["addition_time_embed_dim"] == 256 and layout.unet["cross_attention_dim"] == 1280
    assert layout.unet["transformer_layers_per_block"] == [1, 4, 4, 4]
    assert layout.text_encoders[0]["hidden_size"] == 1280 and layout.text_encoders[0]["num_hidden_layers"] == 32


def _meta_vae(cfg: dict[str, Any]) -> torch.nn.Module:
    from diffusers import AutoencoderKL

    return AutoencoderKL(**cfg)


def test_a_refiner_without_its_size_embedding_or_with_a_wrong_one_is_refused(dirs):
    sd = _state(dirs)
    without = {k: v for k, v in sd.items() if ".label_emb." not in k}
    with pytest.raises(UnsupportedCheckpoint, match="SDXL refiner.*label_emb.0.0.weight"):
        read_layout(without)
    key = "model.diffusion_model.label_emb.0.0.weight"
    narrow = {**sd, key: sd[key][:, :-3]}  # pooled 64 + 37: not five time ids
    with pytest.raises(UnsupportedCheckpoint, match="label_emb takes 101 inputs"):
        read_layout(narrow)


def test_refiner_clip_is_clip_g_alone_at_its_penultimate_layer_with_projected_pool(tiny_tree, refiner, ctx):
    _, clip, _ = refiner
    assert len(clip.encoders) == 1 and clip.specs[0].kind == "clip_g"
    (conditioning,) = call(TextEncode, ctx, text=PROMPT, clip=clip)
    cond, extras = conditioning[0]
    expected = copy.deepcopy(tiny_tree["sdxl_refiner"].encoders[0])
    round_weights_to_half(expected)  # the loader keeps fp16-valued text encoder weights
    ids = clip.tokenizers[0](PROMPT)["input_ids"]
    ids = torch.tensor([ids + [0] * (77 - len(ids))])
    with torch.inference_mode():
        out = expected(input_ids=ids, output_hidden_states=True)
    assert cond.shape == (1, 77, TEXT)
    assert torch.allclose(cond, out.hidden_states[-2], atol=1e-5, rtol=0)
    assert not torch.allclose(cond, out.hidden_states[-1], atol=1e-2)
    assert torch.allclose(extras["pooled_output"], out.text_embeds, atol=1e-5, rtol=0)


def _time_ids_of_run(model: Any, ctx, positive: list, negative: list, seed: int = 1) -> tuple[torch.Tensor, dict]:
    """Sample 2 steps; the time ids the UNet received at its first call and the latent."""
    seen: list[torch.Tensor] = []

    def hook(_module: Any, _args: Any, kwargs: dict) -> None:
        seen.append(kwargs["added_cond_kwargs"]["time_ids"].clone())

    (latent,) = call(EmptyLatent, ctx, width=64, height=64, batch_size=1)
    handle = model.unet().register_forward_pre_hook(hook, with_kwargs=True)
    try:
        (out,) = call(KSampler, ctx, model=model, seed=seed, steps=2, cfg=5.0, sampler_name="euler",
                      scheduler="normal", positive=positive, negative=negative, latent_image=latent, denoise=1.0)
    finally:
        handle.remove()
    return seen[0], out


def test_ksampler_on_the_refiner_gives_a_finite_picture(refiner, ctx):
    model, clip, vae = refiner
    (positive,) = call(TextEncode, ctx, text=PROMPT, clip=clip)
    (negative,) = call(TextEncode, ctx, text="", clip=clip)
    _, out = _time_ids_of_run(model, ctx, positive, negative)
    (image,) = call(VAEDecode, ctx, samples=out, vae=vae)
    assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()
    assert image.std() > 1e-3


def test_aesthetic_score_is_the_only_difference_between_positive_and_negative_time_ids(refiner, ctx):
    model, clip, _ = refiner
    (positive,) = call(TextEncode, ctx, text=PROMPT, clip=clip)
    (negative,) = call(TextEncode, ctx, text="", clip=clip)
    ids, default_out = _time_ids_of_run(model, ctx, positive, negative)
    uncond, cond = ids.tolist()  # the batched call stacks [negative; positive]
    assert uncond == [64.0, 64.0, 0.0, 0.0, 2.5] and cond == [64.0, 64.0, 0.0, 0.0, 6.0]

    (scored,) = call(CLIPTextEncodeSDXLRefiner, ctx, ascore=9.0, width=1024, height=768, text=PROMPT, clip=clip)
    negative_scored = [[negative[0][0], {**negative[0][1], "aesthetic_score": 1.0}]]
    ids, scored_out = _time_ids_of_run(model, ctx, scored, negative_scored)
    assert ids.tolist() == [[64.0, 64.0, 0.0, 0.0, 1.0], [768.0, 1024.0, 0.0, 0.0, 9.0]]
    assert torch.equal(scored[0][0], positive[0][0])  # same prompt, same tokens: only the extras differ
    assert (scored_out["samples"] - default_out["samples"]).abs().max() > 1e-4


def test_base_then_refiner_two_stage_workflow(dirs, manager):
    def encode(clip: list, text: str, ascore: float | None = None) -> dict:
        if ascore is None:
            return {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": clip}}
        return {"class_type": "CLIPTextEncodeSDXLRefiner",
                "inputs": {"ascore": ascore, "width": 64, "height": 64, "text": text, "clip": clip}}

    def advanced(model: list, pos: str, neg: str, latent: list, start: int, end: int, first: bool) -> dict:
        return {"class_type": "KSamplerAdvanced", "inputs": {
            "model": model, "add_noise": "enable" if first else "disable", "noise_seed": 3, "steps": 4, "cfg": 5.0,
            "sampler_name": "euler", "scheduler": "normal", "positive": [pos, 0], "negative": [neg, 0],
            "latent_image": latent, "start_at_step": start, "end_at_step": end,
            "return_with_leftover_noise": "enable" if first else "disable"}}

    workflow = {
        "base": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl-tiny.safetensors"}},
        "ref": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": REFINER}},
        "bp": encode(["base", 1], PROMPT), "bn": encode(["base", 1], ""),
        "rp": encode(["ref", 1], PROMPT, 6.0), "rn": encode(["ref", 1], "", 2.5),
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "s1": advanced(["base", 0], "bp", "bn", ["lat", 0], 0, 2, True),
        "s2": advanced(["ref", 0], "rp", "rn", ["s1", 0], 2, 10000, False),
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["s2", 0], "vae": ["ref", 2]}},
        "save": {"class_type": "PreviewImage", "inputs": {"images": ["dec", 0]}},
    }
    executor = Executor(registry(), Services(dirs=dirs, models=manager))
    result = executor.run(workflow)
    assert result.ok, result.error
    assert {"s1", "s2", "dec"} <= set(result.executed)
    picture = _picture(dirs, result.outputs["save"]["images"][0])
    assert picture.shape == (64, 64, 3) and picture.std() > 0


def _picture(dirs, record: dict) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    folder = dirs.temp if record["type"] == "temp" else dirs.output
    return torch.from_numpy(np.asarray(Image.open(folder / record["subfolder"] / record["filename"])).astype("float32"))


def test_refiner_prompt_over_the_char_limit_is_refused_by_name(dirs, refiner):
    from sdgraph.limits import BudgetExceeded, Limits, configure, current_limits

    before = current_limits()
    configure(Limits(max_prompt_chars=10))
    try:
        message = CLIPTextEncodeSDXLRefiner.validate_inputs(dirs, text="a" * 11)
        assert message is not None and "CLIPTextEncodeSDXLRefiner.text" in message
        assert CLIPTextEncodeSDXLRefiner.validate_inputs(dirs, text="a" * 10) is None
    finally:
        configure(before)
    ctx = NodeContext(node_id="7", prompt_id="test", interrupt=InterruptFlag(),
                      services=Services(dirs=dirs, models=refiner[1].manager, limits=Limits(max_prompt_chars=10)))
    with pytest.raises(BudgetExceeded, match="CLIPTextEncodeSDXLRefiner.text"):
        call(CLIPTextEncodeSDXLRefiner, ctx, ascore=6.0, width=64, height=64, text="a" * 11, clip=refiner[1])
