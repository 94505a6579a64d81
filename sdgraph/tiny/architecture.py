"""Configurations of the tiny models, built from the same diffusers/transformers classes Stable Diffusion uses.

- ``AutoencoderKL``: 64x64 RGB <-> 4x8x8 latents (three downsamplings, like SD's factor 8).
- ``UNet2DConditionModel``: 8x8 latents, cross-attention on the text encoder's 64-wide hidden states.
- ``CLIPTextModel``: 2 layers, hidden 64, the real CLIP vocabulary (49,408 tokens) and 77 positions.
- ``ControlNetModel``: a copy of the UNet's encoder, conditioned on a 64x64 RGB outline image.
- ``DDPMScheduler``: SD's scaled_linear schedule (beta 0.00085..0.012, 1,000 steps, epsilon prediction).
- LoRA: rank-``LORA_RANK`` adapters on every UNet attention projection (to_q, to_k, to_v, to_out.0), saved
  with kohya's key names.

Configurations are plain data, so they are easy to read, to test and to change in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
TOKENIZER_DIR = DATA_DIR / "clip_tokenizer"
MODELS_DIR = DATA_DIR / "models"
CHECKPOINT_NAME = "sdgraph-tiny"
CONTROLNET_NAME = "sdgraph-tiny-outline"
LORA_NAME = "sdgraph-tiny-outline-style"
CHECKPOINT_SUBDIR = Path("checkpoints") / CHECKPOINT_NAME
CONTROLNET_SUBDIR = Path("controlnet") / CONTROLNET_NAME
LORA_FILE = Path("loras") / f"{LORA_NAME}.safetensors"
CLASSIFIER_FILE = Path("eval") / "tiny-classifier.safetensors"

IMAGE_SIZE = 64
LATENT_CHANNELS = 4
LATENT_SIZE = 8
TEXT_HIDDEN = 64
MAX_TOKENS = 77
VOCAB_SIZE = 49408
BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407

VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": LATENT_CHANNELS,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [8, 16, 32, 64],
    "layers_per_block": 1,
    # Few groups: with one channel per group, GroupNorm would normalise each channel's mean away, and with it
    # the flat colours these pictures are made of (a VAE trained that way reconstructs them very slowly).
    "norm_num_groups": 2,
    "act_fn": "silu",
    "sample_size": IMAGE_SIZE,
    "scaling_factor": 1.0,  # replaced by 1/std of the trained latents, as SD does
}

UNET_CONFIG: dict[str, Any] = {
    "sample_size": LATENT_SIZE,
    "in_channels": LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [32, 64],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "cross_attention_dim": TEXT_HIDDEN,
    "attention_head_dim": 4,  # diffusers' name for the number of heads
    "transformer_layers_per_block": 1,
    "act_fn": "silu",
}

TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": TEXT_HIDDEN,
    "intermediate_size": 4 * TEXT_HIDDEN,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": MAX_TOKENS,
    "hidden_act": "quick_gelu",
    "projection_dim": TEXT_HIDDEN,
    "bos_token_id": BOS_TOKEN_ID,
    "eos_token_id": EOS_TOKEN_ID,
    "pad_token_id": EOS_TOKEN_ID,
}

CONTROLNET_EMBEDDING_CHANNELS: tuple[int, ...] = (16, 32, 64, 128)  # three stride-2 convs: 64x64 -> 8x8

SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
}

LORA_RANK = 8
LORA_ALPHA = 8.0
LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")


def build_vae():  # -> AutoencoderKL
    from diffusers import AutoencoderKL

    return AutoencoderKL(**VAE_CONFIG)


def build_unet():  # -> UNet2DConditionModel
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**UNET_CONFIG)


def build_text_encoder():  # -> CLIPTextModel
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(**TEXT_ENCODER_CONFIG))


def build_controlnet(unet):  # -> ControlNetModel
    """A ControlNet whose encoder starts as a copy of ``unet``'s (its zero convolutions start at zero)."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONTROLNET_EMBEDDING_CHANNELS)


def build_scheduler():  # -> DDPMScheduler
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULER_CONFIG)


def load_tokenizer():  # -> CLIPTokenizer
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))


def model_index() -> dict[str, Any]:
    """The model_index.json of the checkpoint folder: a StableDiffusionPipeline without a safety checker."""
    import diffusers

    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def lora_key_prefix(module_name: str) -> str:
    """kohya's LoRA key stem of a UNet module: 'down_blocks.0.attentions.0...to_out.0' -> 'lora_unet_down_..._0'."""
    return "lora_unet_" + module_name.replace(".", "_")


def lora_target_names(unet) -> list[str]:
    """Names of the UNet's linear layers that get a LoRA adapter (every attention projection)."""
    import torch

    names = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name.endswith("." + t) for t in LORA_TARGETS):
            if ".attn1." in name or ".attn2." in name:
                names.append(name)
    return names
