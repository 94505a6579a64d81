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


LORA_RANK = 4
LORA_ALPHA = 2.0  # alpha / rank = 0.5 scales every delta
_UNET_LORA_LAYERS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0", "attn2.to_q", "attn2.to_k",
                     "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
_KOHYA_TEXT_PREFIX = "lora_te_"  # then the module path of transformers' CLIPTextModel (text_model.encoder...)
_CLIP_LORA_LAYERS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1",
                     "mlp.fc2")


def _lora_pairs(prefix: str, module: torch.nn.Module, layers: tuple[str, ...],
                generator: torch.Generator) -> dict[str, torch.Tensor]:
    """kohya's down/up/alpha tensors for each Linear of `module` whose name ends with one of `layers`."""
    state: dict[str, torch.Tensor] = {}
    for name, layer in module.named_modules():
        if not isinstance(layer, torch.nn.Linear) or not name.endswith(layers):
            continue
        stem = prefix + name.replace(".", "_")
        out_features, in_features = layer.weight.shape
        state[f"{stem}.lora_down.weight"] = torch.randn(LORA_RANK, in_features, generator=generator) / in_features ** 0.5
        state[f"{stem}.lora_up.weight"] = torch.randn(out_features, LORA_RANK, generator=generator) * 0.05
        state[f"{stem}.alpha"] = torch.tensor(LORA_ALPHA)
    return state


def kohya_lora(seed: int = 0, directory: Path | None = None) -> Path:
    """A random rank-4 LoRA in kohya's layout for the SD1.5 architecture (UNet attention and feed-forward
    layers under diffusers names, every CLIP encoder layer), fp16 as such files are shared."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    directory = directory or cache_dir()
    path = directory / f"parity-lora-kohya-s{seed}-v{VERSION}.safetensors"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        with torch.device("meta"):  # shapes only
            unet = UNet2DConditionModel(**SD15_UNET)
            clip = CLIPTextModel(CLIPTextConfig(**SD15_CLIP))
        generator = torch.Generator().manual_seed(seed)
        state = {**_lora_pairs("lora_unet_", unet, _UNET_LORA_LAYERS, generator),
                 **_lora_pairs(_KOHYA_TEXT_PREFIX if hasattr(clip, "text_model") else _KOHYA_TEXT_PREFIX + "text_model_",
                               clip, _CLIP_LORA_LAYERS, generator)}
        tmp = path.with_suffix(".partial")
        save_file({k: v.half() for k, v in state.items()}, str(tmp))
        tmp.replace(path)
    return path


def sd15_controlnets(seed: int = 0, directory: Path | None = None) -> tuple[Path, Path]:
    """One random SD1.5-architecture ControlNet (fp16, as such files are shared) written twice: in the original
    (lllyasviel, `control_model.*`) layout and as a diffusers-layout single file with no config beside it."""
    from diffusers import ControlNetModel

    from sdgraph.nodes.sd.ldm_names import controlnet_to_ldm

    directory = directory or cache_dir()
    original = directory / f"parity-controlnet-original-s{seed}-v{VERSION}.safetensors"
    diffusers_file = directory / f"parity-controlnet-diffusers-s{seed}-v{VERSION}.safetensors"
    if not (original.exists() and diffusers_file.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(seed + 1)
        net = ControlNetModel(**{k: v for k, v in SD15_UNET.items() if k != "sample_size"})
        _randomize(net)
        state = {k: v.half().contiguous() for k, v in net.state_dict().items()}
        del net
        for path, tensors in ((original, controlnet_to_ldm(state, layers_per_block=2)), (diffusers_file, state)):
            tmp = path.with_suffix(".partial")
            save_file(tensors, str(tmp))
            tmp.replace(path)
    return original, diffusers_file


HYPERNETWORK_WIDTHS = (768, 320)  # the text context (every cross-attention) and the top level's self-attention


def _hypernetwork_net(width: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A 1-2-1 network with a layer norm after each linear layer, in A1111's key names (file order matters)."""
    def linear(out: int, inp: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(out, inp, generator=generator) / inp ** 0.5 * 0.5, torch.randn(out, generator=generator) * 0.02

    (w1, b1), (w2, b2) = linear(2 * width, width), linear(width, 2 * width)
    return {"linear.0.weight": w1, "linear.0.bias": b1,
            "linear.2.weight": 1 + 0.1 * torch.randn(2 * width, generator=generator),
            "linear.2.bias": 0.02 * torch.randn(2 * width, generator=generator),
            "linear.3.weight": w2, "linear.3.bias": b2,
            "linear.5.weight": 1 + 0.1 * torch.randn(width, generator=generator),
            "linear.5.bias": 0.02 * torch.randn(width, generator=generator)}


def hypernetwork(seed: int = 0, directory: Path | None = None) -> Path:
    """A random hypernetwork in the A1111 / ComfyUI `.pt` layout (relu, layer norms) for two SD1.5 widths."""
    directory = directory or cache_dir()
    path = directory / f"parity-hypernetwork-s{seed}-v{VERSION}.pt"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(seed + 2)
        data: dict = {width: [_hypernetwork_net(width, generator), _hypernetwork_net(width, generator)]
                      for width in HYPERNETWORK_WIDTHS}
        data.update(activation_func="relu", is_layer_norm=True, use_dropout=False, activate_output=False,
                    last_layer_dropout=False, layer_structure=[1, 2, 1], name="parity", step=0)
        tmp = path.with_suffix(".partial")
        torch.save(data, tmp)
        tmp.replace(path)
    return path


if __name__ == "__main__":
    print(sd15_checkpoint(int(sys.argv[1]) if len(sys.argv) > 1 else 0))
