"""Load Stable Diffusion checkpoints, VAEs and ControlNets into socket values, through the model manager.

- Original single-file checkpoints (`.safetensors`, `.ckpt`): the family and configs come from the key layout
  (see `checkpoint_layout`); the weights are converted with diffusers' own LDM conversion functions, offline.
  The file is mapped, not read whole (`weight_file`); the models are built without random weights
  (`empty_init`) and take each tensor, cast to its role's dtype as it is read, as their own parameter.
- diffusers-format folders (`model_index.json` with unet/ vae/ text_encoder/ [text_encoder_2/] scheduler/
  [tokenizer/]): a part stored as one `.safetensors` file is built without random weights too and takes the
  file's tensors, cast as `from_pretrained` casts them; other parts (sharded, `.bin`, old key names) load with
  `from_pretrained` from the local folder only.
- diffusers and transformers are imported module by module, on first use (`lean_imports`).
- The CLIP tokenizer ships with sdgraph (`sdgraph/data/clip_tokenizer/`) and serves every text encoder.

Every loader goes through `ModelManager.load`, so a file is read once while it is unchanged.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from sdgraph.paths import PACKAGE_DATA

from sdgraph.nodes.sd.checkpoint_layout import (
    OPEN_CLIP_PREFIX, CheckpointLayout, StateDict, UnsupportedCheckpoint, family_defaults, infer_vae_config,
    read_layout,
)
from sdgraph.nodes.sd.empty_init import assign_weights, empty_weights
from sdgraph.nodes.sd.model_objects import (
    ClipModel, ControlNetModel, DiffusionModel, EncoderSpec, LatentFormat, VaeModel, sd_alphas_cumprod,
)
from sdgraph.nodes.sd.text_precision import keep_half_values
from sdgraph.nodes.sd.weight_file import WeightFile, open_weights

TOKENIZER_DIR = PACKAGE_DATA / "clip_tokenizer"
SDXL_VAE_SCALE = 0.13025


# ---- reading files ----------------------------------------------------------------------------------------


def read_state_dict(path: Path) -> StateDict:
    """All tensors of a `.safetensors` file, or of a pickled `.ckpt`/`.pt` loaded with `weights_only`."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    data = torch.load(str(path), map_location="cpu", weights_only=True)
    data = data.get("state_dict", data) if isinstance(data, dict) else data
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


@lru_cache(maxsize=4)
def shipped_tokenizer(folder: str = str(TOKENIZER_DIR)) -> Any:
    from transformers.models.clip.tokenization_clip import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def _load_weights(module: torch.nn.Module, weights: StateDict, what: str) -> None:
    missing, _unexpected = module.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise UnsupportedCheckpoint(f"{what}: {len(missing)} weights missing, e.g. {missing[:3]}")


def scheduler_schedule(config: dict[str, Any]) -> tuple[torch.Tensor, str]:
    """alphas_cumprod (float64) and prediction type from a diffusers scheduler config."""
    alphas = sd_alphas_cumprod(config.get("beta_start", 0.00085), config.get("beta_end", 0.012),
                               config.get("num_train_timesteps", 1000), config.get("beta_schedule", "scaled_linear"))
    return alphas, config.get("prediction_type", "epsilon")


# ---- checkpoints ------------------------------------------------------------------------------------------


def load_checkpoint(path: Path, manager: Any) -> tuple[DiffusionModel, ClipModel, VaeModel]:
    """MODEL, CLIP and VAE of a checkpoint file or diffusers folder (cached by the manager)."""
    loader = _load_diffusers_folder if path.is_dir() else _load_single_file
    return manager.load(path, "checkpoint", lambda p: loader(p, manager))


def _load_single_file(path: Path, manager: Any) -> tuple[DiffusionModel, ClipModel, VaeModel]:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    sd = open_weights(path)
    layout = read_layout(sd, path.name)
    with empty_weights():
        unet = UNet2DConditionModel(**layout.unet)
        vae = AutoencoderKL(**layout.vae)
    unet_sd, vae_sd = sd.cast(manager.dtype_for_role("unet")), sd.cast(manager.dtype_for_role("vae"))
    assign_weights(unet, convert_ldm_unet_checkpoint(unet_sd, layout.unet), f"{path.name}: UNet")
    assign_weights(vae, convert_ldm_vae_checkpoint(vae_sd, layout.vae), f"{path.name}: VAE")
    text_sd = sd.cast(manager.dtype_for_role("text_encoder"))
    encoders = [_single_file_text_encoder(text_sd, layout, i, path.name) for i in range(len(layout.text_encoders))]
    return _assemble(manager, path.name, layout, unet, vae, encoders)


def _single_file_text_encoder(sd: WeightFile, layout: CheckpointLayout, index: int, name: str) -> torch.nn.Module:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint, convert_open_clip_checkpoint

    cfg = layout.text_encoders[index]
    with empty_weights():
        model = _text_model(cfg)
    if cfg["kind"] == "clip_l":
        weights = convert_ldm_clip_checkpoint(sd)
    else:
        weights = convert_open_clip_checkpoint(model, sd, prefix=OPEN_CLIP_PREFIX[layout.family])
    if not hasattr(model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    assign_weights(model, weights, f"{name}: text encoder {cfg['kind']}")
    return model


def _text_model(cfg: dict[str, Any]) -> torch.nn.Module:
    from transformers.models.clip.configuration_clip import CLIPTextConfig

    params = {k: v for k, v in cfg.items() if k not in ("kind", "class")}
    return _text_class(cfg.get("class", "CLIPTextModel"))(CLIPTextConfig(**params))


def _text_class(name: str) -> type:
    from transformers.models.clip.modeling_clip import CLIPTextModel, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection if name == "CLIPTextModelWithProjection" else CLIPTextModel


def _assemble(manager: Any, name: str, layout: CheckpointLayout, unet: torch.nn.Module, vae: torch.nn.Module,
              encoders: list[torch.nn.Module], tokenizer: Any = None) -> tuple[DiffusionModel, ClipModel, VaeModel]:
    alphas, _ = scheduler_schedule(layout.scheduler)
    model = DiffusionModel(slot=manager.manage(unet, f"{name}:unet", "unet"), prediction_type=layout.prediction_type,
                           alphas_cumprod=alphas, is_sdxl=layout.is_sdxl, is_sdxl_refiner=layout.is_sdxl_refiner,
                           latent_channels=int(layout.unet.get("out_channels", 4)),
                           latent_format=LatentFormat.from_vae_config(layout.vae), name=name)
    specs = tuple(
        EncoderSpec(kind=cfg["kind"], default_skip=layout.default_clip_skip[i], final_norm=layout.final_norm[i],
                    dropped_layers=layout.dropped_layers[i] if i < len(layout.dropped_layers) else 0,
                    pad_id=int(cfg.get("pad_token_id", 49407)))
        for i, cfg in enumerate(layout.text_encoders))
    slots = tuple(manager.manage(enc, f"{name}:text_encoder{i or ''}", "text_encoder") for i, enc in enumerate(encoders))
    for slot in slots:
        keep_half_values(slot)
    tok = tokenizer if tokenizer is not None else shipped_tokenizer()
    clip = ClipModel(tokenizers=(tok,) * len(slots), encoders=slots, specs=specs, name=name)
    vae_obj = _vae_object(manager, vae, name, layout.vae)
    return model, clip, vae_obj


def _vae_object(manager: Any, vae: torch.nn.Module, name: str, cfg: dict[str, Any]) -> VaeModel:
    levels = len(cfg.get("block_out_channels", [0, 0, 0, 0]))
    return VaeModel(slot=manager.manage(vae, f"{name}:vae", "vae"), scaling_factor=float(cfg.get("scaling_factor", 0.18215)),
                    shift_factor=float(cfg.get("shift_factor") or 0.0), latent_channels=int(cfg.get("latent_channels", 4)),
                    downscale=2 ** (levels - 1), name=name)


# ---- diffusers folders ------------------------------------------------------------------------------------


def _load_diffusers_folder(path: Path, manager: Any) -> tuple[DiffusionModel, ClipModel, VaeModel]:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    if not (path / "model_index.json").is_file():
        raise UnsupportedCheckpoint(f"{path.name}: a checkpoint folder needs a model_index.json")
    unet = diffusers_part(UNet2DConditionModel, path / "unet", manager.dtype_for_role("unet"))
    vae = diffusers_part(AutoencoderKL, path / "vae", manager.dtype_for_role("vae"))
    names = ["text_encoder"] + (["text_encoder_2"] if (path / "text_encoder_2").is_dir() else [])
    encoders = [_pretrained_text_encoder(path / n, manager.dtype_for_role("text_encoder")) for n in names]
    layout = _folder_layout(path, unet, vae, encoders)
    tokenizer = shipped_tokenizer(str(path / "tokenizer")) if (path / "tokenizer" / "vocab.json").is_file() else None
    return _assemble(manager, path.name, layout, unet, vae, encoders, tokenizer)


def diffusers_part(cls: Any, folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    """A diffusers model folder, as `cls.from_pretrained(folder, torch_dtype=dtype)` gives it: built on the meta
    device when its weights are one `.safetensors` file that fills it, else by `from_pretrained` itself."""
    weights = folder / "diffusion_pytorch_model.safetensors"
    if weights.is_file():
        with empty_weights():
            model = cls.from_config(cls.load_config(folder))
        try:
            assign_weights(model, open_weights(weights).cast(dtype), f"{folder.parent.name}/{folder.name}")
        except UnsupportedCheckpoint:
            pass  # old key names or missing weights: from_pretrained converts or reports them
        else:
            model.register_to_config(_name_or_path=folder)
            return model.eval()
    return cls.from_pretrained(folder, local_files_only=True, torch_dtype=dtype)


def _pretrained_text_encoder(folder: Path, dtype: torch.dtype) -> torch.nn.Module:
    """A transformers text-encoder folder, as `from_pretrained(folder, dtype=dtype)` gives it (built on the meta
    device when its weights are one `model.safetensors`)."""
    from transformers.models.clip.configuration_clip import CLIPTextConfig

    arch = json.loads((folder / "config.json").read_text()).get("architectures") or ["CLIPTextModel"]
    cls = _text_class(arch[0])
    weights = folder / "model.safetensors"
    if weights.is_file():
        config = CLIPTextConfig.from_pretrained(folder, local_files_only=True)
        with empty_weights():
            model = cls(config)
        tensors: Any = open_weights(weights).cast(dtype)
        if not hasattr(model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
            tensors = {k.removeprefix("text_model."): tensors[k] for k in tensors}
        try:
            assign_weights(model, tensors, f"{folder.parent.name}/{folder.name}")
        except UnsupportedCheckpoint:
            pass
        else:
            model.config.dtype, model.config.name_or_path = dtype, str(folder)
            return model.eval()
    return cls.from_pretrained(folder, local_files_only=True, dtype=dtype)


def _folder_layout(path: Path, unet: Any, vae: Any, encoders: list[Any]) -> CheckpointLayout:
    sched_file = path / "scheduler" / "scheduler_config.json"
    scheduler = json.loads(sched_file.read_text()) if sched_file.is_file() else family_defaults("sd1")["scheduler"]
    hidden = encoders[0].config.hidden_size
    family = "sdxl" if len(encoders) == 2 else ("sd2" if encoders[0].config.hidden_act == "gelu" and hidden >= 1024
                                                else "sd1")
    defaults = family_defaults(family)
    kinds = [cfg["kind"] for cfg in defaults["text_encoders"]]
    te = [{"kind": kinds[i], "pad_token_id": defaults["text_encoders"][i]["pad_token_id"]} for i in range(len(encoders))]
    return CheckpointLayout(family, scheduler.get("prediction_type", "epsilon"), dict(unet.config), dict(vae.config),
                            te, scheduler, list(defaults["default_clip_skip"]), list(defaults["final_norm"]),
                            list(defaults.get("dropped_layers", [0] * len(encoders))))


# ---- VAE and ControlNet files -----------------------------------------------------------------------------


def load_vae(path: Path, manager: Any) -> VaeModel:
    """A VAE from a diffusers folder or a single LDM-layout file (scaling factor: SDXL's if 'xl' is in the name)."""
    return manager.load(path, "vae", lambda p: _load_vae_uncached(p, manager))


def _load_vae_uncached(path: Path, manager: Any) -> VaeModel:
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    if path.is_dir():
        vae = diffusers_part(AutoencoderKL, path, manager.dtype_for_role("vae"))
        return _vae_object(manager, vae, path.name, dict(vae.config))
    sd = open_weights(path)
    prefix = next((p for p in ("first_stage_model.", "vae.") if any(k.startswith(p) for k in sd)), "")
    if prefix + "encoder.down.0.block.0.conv1.weight" not in sd:
        raise UnsupportedCheckpoint(f"{path.name}: not an LDM-layout VAE (encoder.down.N.block.M keys)")
    cfg = infer_vae_config(sd, prefix, family_defaults("sd1")["vae"])
    if "xl" in path.name.lower():
        cfg["scaling_factor"] = SDXL_VAE_SCALE
    with empty_weights():
        vae = AutoencoderKL(**cfg)
    weights = convert_ldm_vae_checkpoint(sd.cast(manager.dtype_for_role("vae")), cfg)
    assign_weights(vae, weights, f"{path.name}: VAE")
    return _vae_object(manager, vae, path.name, cfg)


def load_controlnet(path: Path, manager: Any) -> ControlNetModel:
    """A ControlNet from a diffusers folder or a single file (`.safetensors`, `.pth`, `.ckpt`) in the original
    (lllyasviel, `control_model.*`) or the diffusers layout; the config comes from the keys (`controlnet_layout`),
    or from a diffusers-layout file's `config.json` beside it (named `<file>.json` or `config.json`)."""
    return manager.load(path, "controlnet", lambda p: _load_controlnet_uncached(p, manager))


def _load_controlnet_uncached(path: Path, manager: Any) -> ControlNetModel:
    from diffusers.models.controlnets.controlnet import ControlNetModel as DiffusersControlNet

    from sdgraph.nodes.sd.controlnet_layout import build_controlnet, detect_layout, read_controlnet
    from sdgraph.nodes.sd.t2i_adapter import is_t2i_adapter

    if path.is_dir():
        config_file = path / "config.json"
        if config_file.is_file() and json.loads(config_file.read_text()).get("_class_name") == "T2IAdapter":
            return _t2i_adapter(path, None, manager)
        module = DiffusersControlNet.from_pretrained(path, local_files_only=True,
                                                     torch_dtype=manager.dtype_for_role("controlnet"))
    else:
        sd = read_state_dict(path)
        if is_t2i_adapter(sd):
            return _t2i_adapter(path, sd, manager)
        config_file = next((c for c in (path.with_suffix(".json"), path.parent / "config.json") if c.is_file()), None)
        if config_file is not None and detect_layout(sd, path.name) == "diffusers":
            config, weights = json.loads(config_file.read_text()), sd
        else:
            config, weights = read_controlnet(sd, path.name)
        module = build_controlnet(config, weights, path.name)
        del sd, weights
    return ControlNetModel(slot=manager.manage(module, f"{path.name}:controlnet", "controlnet"), name=path.name)


def _t2i_adapter(path: Path, sd: StateDict | None, manager: Any) -> ControlNetModel:
    """A T2I-Adapter from a diffusers folder (`sd` None) or a single file's tensors (either layout)."""
    from diffusers.models.adapter import T2IAdapter

    from sdgraph.nodes.sd.model_objects import T2IAdapterModel
    from sdgraph.nodes.sd.t2i_adapter import build_t2i_adapter, read_t2i_adapter

    if sd is None:
        module = T2IAdapter.from_pretrained(path, local_files_only=True)
    else:
        module = build_t2i_adapter(*read_t2i_adapter(sd, path.name), path.name)
    slot = manager.manage(module, f"{path.name}:t2i_adapter", "controlnet")
    return T2IAdapterModel(slot=slot, name=path.name, channels_in=int(module.config.in_channels),
                           unshuffle=int(module.downscale_factor))
