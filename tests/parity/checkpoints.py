"""Deterministic random-weight checkpoints in the real SD1.5 architecture, saved as one original-layout file.

Used by the reference harness (tools/comfy_reference) and by the parity tests, so both engines read the same
bytes. The file is built once into a cache directory and reused while its name (seed and version) matches.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.sd.tiny_models import TinyParts, _randomize, single_file_state

VERSION = 1
CACHE_ENV = "SDGRAPH_PARITY_CACHE"

SD15_UNET = {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8}
SD15_VAE = {"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 2, "latent_channels": 4,
            "sample_size": 512, "scaling_factor": 0.18215}
SD15_CLIP = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
             "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
             "projection_dim": 768, "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "sdgraph-parity"))


def build_sd15_parts(seed: int) -> TinyParts:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    parts = TinyParts(UNet2DConditionModel(**SD15_UNET), AutoencoderKL(**SD15_VAE),
                      [CLIPTextModel(CLIPTextConfig(**SD15_CLIP))])
    for m in (parts.unet, parts.vae, *parts.encoders):
        _randomize(m)
    return parts


def sd15_checkpoint(seed: int = 0, directory: Path | None = None) -> Path:
    """The path of the SD1.5-architecture file for `seed`, building it first if it is not cached."""
    directory = directory or cache_dir()
    path = directory / f"parity-sd15-s{seed}-v{VERSION}.safetensors"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        state = single_file_state("sd1", build_sd15_parts(seed))
        tmp = path.with_suffix(".partial")
        save_file(state, str(tmp))
        del state
        tmp.replace(path)
    return path


if __name__ == "__main__":
    print(sd15_checkpoint(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
