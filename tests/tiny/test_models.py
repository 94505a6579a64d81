"""The committed tiny models: diffusers/transformers folders that load like real checkpoints, and that mean
something (the classifier reads real pictures, the VAE reconstructs them, the LoRA is a kohya file)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors import safe_open

from sdgraph.tiny import architecture as arch
from sdgraph.tiny.classifier import accuracy, held_out_dataset, load_classifier
from sdgraph.tiny.lora import merge_lora_file

torch.set_num_threads(1)

CHECKPOINT = arch.MODELS_DIR / arch.CHECKPOINT_SUBDIR
CONTROLNET = arch.MODELS_DIR / arch.CONTROLNET_SUBDIR
LORA = arch.MODELS_DIR / arch.LORA_FILE
CLASSIFIER = arch.MODELS_DIR / arch.CLASSIFIER_FILE
WEIGHT_FILES = [
    CHECKPOINT / "unet" / "diffusion_pytorch_model.safetensors",
    CHECKPOINT / "vae" / "diffusion_pytorch_model.safetensors",
    CHECKPOINT / "text_encoder" / "model.safetensors",
    CONTROLNET / "diffusion_pytorch_model.safetensors",
    LORA,
    CLASSIFIER,
]


def test_layout_matches_the_contract() -> None:
    for part in ("model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "vae/config.json",
                 "text_encoder/config.json", "tokenizer/vocab.json", "tokenizer/merges.txt"):
        assert (CHECKPOINT / part).is_file(), part
    assert (CONTROLNET / "config.json").is_file()
    for path in WEIGHT_FILES:
        assert path.is_file(), path
    index = json.loads((CHECKPOINT / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["safety_checker"] == [None, None]


def test_weights_are_fp16_and_fit_the_budget() -> None:
    total = 0
    for path in WEIGHT_FILES:
        total += path.stat().st_size
        with safe_open(str(path), framework="pt") as handle:
            dtypes = {handle.get_slice(k).get_dtype() for k in handle.keys()}
        assert dtypes == {"F16"}, (path, dtypes)
    assert total <= 25 * 1024 * 1024


def test_parts_load_with_from_pretrained_as_fp32() -> None:
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(CHECKPOINT / "unet")
    vae = AutoencoderKL.from_pretrained(CHECKPOINT / "vae")
    text_encoder = CLIPTextModel.from_pretrained(CHECKPOINT / "text_encoder")
    controlnet = ControlNetModel.from_pretrained(CONTROLNET)
    scheduler = DDPMScheduler.from_pretrained(CHECKPOINT / "scheduler")
    assert {unet.dtype, vae.dtype, text_encoder.dtype, controlnet.dtype} == {torch.float32}
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size == arch.TEXT_HIDDEN
    assert unet.config.in_channels == vae.config.latent_channels == 4
    assert len(vae.config.block_out_channels) == 4  # three downsamplings: 64x64 -> 8x8
    assert vae.config.scaling_factor != 1.0
    assert text_encoder.config.vocab_size == 49408 and text_encoder.config.max_position_embeddings == 77
    c = scheduler.config
    assert (c.beta_start, c.beta_end, c.beta_schedule, c.num_train_timesteps, c.prediction_type) == (
        0.00085, 0.012, "scaled_linear", 1000, "epsilon")


def test_text_encoder_uses_sd_key_names() -> None:
    with safe_open(str(CHECKPOINT / "text_encoder" / "model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert all(k.startswith("text_model.") for k in keys)
    assert "text_model.embeddings.token_embedding.weight" in keys


def test_whole_folder_loads_as_a_stable_diffusion_pipeline() -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(CHECKPOINT, safety_checker=None)
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert pipe.vae_scale_factor == 8


def test_vae_reconstructs_real_pictures() -> None:
    """Pictures survive encode and decode: small pixel error, and the classifier reads every attribute back."""
    from diffusers import AutoencoderKL

    from sdgraph.tiny.shapes import ATTRIBUTES

    vae = AutoencoderKL.from_pretrained(CHECKPOINT / "vae").eval()
    dataset = held_out_dataset(64)
    images = torch.from_numpy(dataset.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        latents = vae.encode(images).latent_dist.mean
        recon = vae.decode(latents).sample.clamp(-1, 1)
    assert latents.shape == (64, 4, 8, 8)
    assert (recon - images).abs().mean() < 0.1  # on the -1..1 scale; the committed VAE: 0.073
    seen = load_classifier().predict((recon + 1) / 2)
    for name in ATTRIBUTES:
        truth = [ATTRIBUTES[name][i] for i in dataset.label_indices[name]]
        agree = np.mean([a == b for a, b in zip(seen[name], truth)])
        assert agree >= 0.9, (name, agree)  # issue 4 asks 90% of generated pictures; the round trip is their ceiling


def test_lora_file_uses_kohya_keys_of_unet_attention() -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(CHECKPOINT / "unet")
    modules = {arch.lora_key_prefix(name): module for name, module in unet.named_modules()}
    pattern = re.compile(r"^lora_unet_\w+_attn[12]_to_(q|k|v|out_0)\.(lora_down\.weight|lora_up\.weight|alpha)$")
    with safe_open(str(LORA), framework="pt") as handle:
        keys = list(handle.keys())
        for key in keys:
            assert pattern.match(key), key
            prefix = key.split(".")[0]
            linear = modules[prefix]
            if key.endswith("lora_down.weight"):
                assert handle.get_tensor(key).shape == (arch.LORA_RANK, linear.in_features)
            if key.endswith("lora_up.weight"):
                assert handle.get_tensor(key).shape == (linear.out_features, arch.LORA_RANK)
    assert len(keys) == 3 * len(arch.lora_target_names(unet))


def test_lora_at_strength_zero_changes_nothing() -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(CHECKPOINT / "unet")
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    merge_lora_file(unet, LORA, 0.0)
    assert all(torch.equal(before[k], v) for k, v in unet.state_dict().items())
    merge_lora_file(unet, LORA, 1.0)
    assert any(not torch.equal(before[k], v) for k, v in unet.state_dict().items())


def test_classifier_reads_held_out_real_pictures() -> None:
    model = load_classifier(CLASSIFIER)
    scores = accuracy(model, held_out_dataset(300))
    assert min(scores.values()) >= 0.97, scores
    assert model.features(torch.zeros(2, 3, 64, 64)).shape == (2, 128)
