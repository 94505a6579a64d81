"""`comfy.sd` for plugins: checkpoint, text encoder, UNet and VAE loading through sdgraph's loaders.

What comes back are sdgraph's own socket values (MODEL `DiffusionModel`, CLIP `ClipModel`, VAE `VaeModel`), loaded
by the model manager of the node call in progress and cached by it like the loader nodes' results, so a pack's
`load_checkpoint_guess_config(path)` gives objects that sdgraph's KSampler, TextEncode and VAEDecode take.
`CLIP` and `VAE` are those classes for isinstance checks; `VAE(sd=...)` builds one from an LDM-layout state dict.
Only the Stable Diffusion families sdgraph runs (SD 1.x, 2.x, XL) load; another family's `clip_type` raises.
"""
from __future__ import annotations

import enum
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch

from sdgraph.comfy_layer import binding
from sdgraph.nodes.sd.clip_file import clip_of, load_text_encoder
from sdgraph.nodes.sd.loading import load_checkpoint as _load_checkpoint
from sdgraph.nodes.sd.loading import load_vae
from sdgraph.nodes.sd.model_objects import ClipModel, DiffusionModel, VaeModel
from sdgraph.nodes.sd.unet_file import load_unet as _load_unet_file

import comfy.lora


class CLIPType(enum.Enum):
    STABLE_DIFFUSION = 1
    STABLE_CASCADE = 2
    SD3 = 3
    STABLE_AUDIO = 4
    HUNYUAN_DIT = 5
    FLUX = 6
    MOCHI = 7
    LTXV = 8
    HUNYUAN_VIDEO = 9
    PIXART = 10
    COSMOS = 11
    LUMINA2 = 12
    WAN = 13
    HIDREAM = 14
    CHROMA = 15
    ACE = 16
    OMNIGEN2 = 17
    QWEN_IMAGE = 18
    HUNYUAN_IMAGE = 19


class _ValueClass(type):
    """isinstance(x, comfy.sd.VAE) is True for sdgraph's value of that socket."""

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls.SDGRAPH_CLASS) or type.__instancecheck__(cls, obj)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, cls.SDGRAPH_CLASS) or type.__subclasscheck__(cls, sub)


class CLIP(metaclass=_ValueClass):
    SDGRAPH_CLASS = ClipModel

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("comfy.sd.CLIP(...): build a CLIP with comfy.sd.load_clip(paths) or "
                                  "load_checkpoint_guess_config in sdgraph's ComfyUI layer")


class VAE(metaclass=_ValueClass):
    SDGRAPH_CLASS = VaeModel

    def __new__(cls, sd: dict[str, torch.Tensor] | None = None, device: Any = None, config: Any = None,
                dtype: Any = None, metadata: Any = None) -> Any:
        """A VAE (sdgraph's VaeModel) from an LDM-layout state dict (`encoder.down.N...`, optionally under
        `first_stage_model.`)."""
        if sd is None or config is not None:
            raise NotImplementedError("comfy.sd.VAE: sdgraph builds a VAE from an LDM-layout state dict (sd=...) "
                                      "only, not from a config")
        return load_vae(_spill(sd, "vae"), _manager())


def _manager() -> Any:
    return binding.model_manager()


_SPILL_DIR: list[Path] = []


def _spill(sd: dict[str, torch.Tensor], kind: str) -> Path:
    """An in-memory state dict as a safetensors file, so sdgraph's file loaders (which map weights and may read
    them again after an eviction) can take it; the files live until the process ends."""
    from safetensors.torch import save_file  # noqa: PLC0415

    if not _SPILL_DIR:
        _SPILL_DIR.append(Path(tempfile.mkdtemp(prefix="sdgraph-comfy-sd-")))
    fd, name = tempfile.mkstemp(suffix=".safetensors", prefix=f"{kind}-", dir=_SPILL_DIR[0])
    os.close(fd)
    save_file({k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}, name)
    return Path(name)


def _embedding_dirs(clip: ClipModel, embedding_directory: Any) -> ClipModel:
    import dataclasses  # noqa: PLC0415

    if embedding_directory is None:
        roots = tuple(binding.dirs().model_roots("embeddings"))
    elif isinstance(embedding_directory, (str, os.PathLike)):
        roots = (Path(embedding_directory),)
    else:
        roots = tuple(Path(d) for d in embedding_directory)
    return dataclasses.replace(clip, embedding_dirs=roots)


def load_checkpoint_guess_config(ckpt_path: str, output_vae: bool = True, output_clip: bool = True,
                                 output_clipvision: bool = False, embedding_directory: Any = None,
                                 output_model: bool = True, model_options: dict | None = None,
                                 te_model_options: dict | None = None) -> tuple[Any, Any, Any, Any]:
    """(MODEL, CLIP, VAE, CLIP_VISION) of a checkpoint file or diffusers folder, the parts not asked for None.
    A checkpoint's own CLIP vision tower (unCLIP) is not read: the fourth item is always None."""
    if output_clipvision:
        raise NotImplementedError("comfy.sd.load_checkpoint_guess_config(output_clipvision=True): sdgraph's layer "
                                  "does not read a checkpoint's CLIP vision tower; load it with comfy.clip_vision")
    model, clip, vae = _load_checkpoint(Path(ckpt_path), _manager())
    return (model if output_model else None, _embedding_dirs(clip, embedding_directory) if output_clip else None,
            vae if output_vae else None, None)


def load_checkpoint(config_path: str | None = None, ckpt_path: str | None = None, output_vae: bool = True,
                    output_clip: bool = True, embedding_directory: Any = None, state_dict: Any = None,
                    config: Any = None) -> tuple[Any, Any, Any]:
    """(MODEL, CLIP, VAE) with a v-prediction config honoured (CheckpointLoader's behaviour)."""
    from sdgraph.nodes.sd.loaders import config_prediction_type  # noqa: PLC0415

    if ckpt_path is None:
        raise NotImplementedError("comfy.sd.load_checkpoint: a state_dict without a file is not supported")
    model, clip, vae, _ = load_checkpoint_guess_config(ckpt_path, output_vae, output_clip,
                                                       embedding_directory=embedding_directory)
    if config_path is not None:
        import dataclasses  # noqa: PLC0415

        model = dataclasses.replace(model.clone(), prediction_type=config_prediction_type(Path(config_path)))
    return model, clip, vae


def load_clip(ckpt_paths: Sequence[str], embedding_directory: Any = None,
              clip_type: CLIPType = CLIPType.STABLE_DIFFUSION, model_options: dict | None = None) -> ClipModel:
    """CLIP of one text encoder file (SD 1.x / 2.x / the XL refiner) or two (SDXL's CLIP-L and OpenCLIP-G)."""
    if clip_type not in (CLIPType.STABLE_DIFFUSION,):
        raise NotImplementedError(f"comfy.sd.load_clip: clip_type {clip_type.name} is a model family sdgraph "
                                  "does not run (STABLE_DIFFUSION only; two files make SDXL's pair)")
    manager = _manager()
    encoders = [load_text_encoder(Path(p), manager) for p in ckpt_paths]
    if len(encoders) == 2:
        recipe = "sdxl"
    elif len(encoders) == 1:
        recipe = "stable_diffusion"
    else:
        raise ValueError(f"comfy.sd.load_clip: takes one or two text encoder files, got {len(encoders)}")
    return _embedding_dirs(clip_of(encoders, recipe), embedding_directory)


def load_diffusion_model(unet_path: str, model_options: dict | None = None) -> DiffusionModel:
    """MODEL of a UNet-only file or folder; model_options["dtype"] torch.float8_e4m3fn / e5m2 stores it in fp8."""
    dtype = (model_options or {}).get("dtype")
    weight_dtype = {torch.float8_e4m3fn: "fp8_e4m3fn", torch.float8_e5m2: "fp8_e5m2"}.get(dtype, "default")
    return _load_unet_file(Path(unet_path), _manager(), weight_dtype)


def load_unet(unet_path: str, dtype: Any = None) -> DiffusionModel:
    return load_diffusion_model(unet_path, {"dtype": dtype} if dtype is not None else None)


def load_diffusion_model_state_dict(sd: dict[str, torch.Tensor], model_options: dict | None = None
                                    ) -> DiffusionModel:
    return load_diffusion_model(str(_spill(sd, "unet")), model_options)


def load_lora_for_models(model: Any, clip: Any, lora: dict[str, torch.Tensor], strength_model: float,
                         strength_clip: float) -> tuple[Any, Any]:
    """New MODEL and CLIP carrying a LoRA state dict (either may be None), as LoraLoader applies a file."""
    key_map: dict[str, Any] = {}
    if model is not None:
        key_map = comfy.lora.model_lora_keys_unet(model, key_map)
    if clip is not None:
        key_map = comfy.lora.model_lora_keys_clip(clip, key_map)
    loaded = comfy.lora.load_lora(lora, key_map)
    new_model = new_clip = None
    if model is not None:
        new_model = model.clone()
        new_model.add_patches(loaded, strength_model)
    if clip is not None:
        new_clip = clip.clone()
        new_clip.add_patches(loaded, strength_clip)
    return new_model, new_clip
