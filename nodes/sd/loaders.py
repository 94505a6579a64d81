"""Loader nodes: checkpoints, VAEs, ControlNets, LoRAs, and the CLIP layer to stop at."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from sdgraph.node import Combo, Float, Input, Int, Node, Output, models_in
from sdgraph.nodes.sd import attention_multiply, clip_vision_nodes, merging, saving
from sdgraph.nodes.sd.common import manager_of, model_path
from sdgraph.nodes.sd.embeddings import with_embeddings
from sdgraph.nodes.sd.loading import load_checkpoint, load_controlnet, load_vae
from sdgraph.nodes.sd.lora import apply_lora, read_lora
from sdgraph.nodes.sd.model_objects import ClipModel, DiffusionModel
from sdgraph.nodes.sd.part_loaders import NODES as PART_LOADERS
from sdgraph.paths import Dirs, safe_join
from sdgraph.types import CLIP, CONTROL_NET, MODEL, VAE


class CheckpointLoaderSimple(Node):
    """Load a Stable Diffusion checkpoint (single file or diffusers folder; SD 1.x, 2.x, XL detected)."""

    category = "loaders"
    inputs = [Combo("ckpt_name", models_in("checkpoints"), tooltip="a file or diffusers folder in models/checkpoints")]
    outputs = [Output(MODEL), Output(CLIP), Output(VAE)]

    def run(self, ckpt_name: str) -> tuple:
        model, clip, vae = load_checkpoint(model_path(self.ctx, "checkpoints", ckpt_name), manager_of(self.ctx))
        return model, with_embeddings(clip, self.ctx.dirs), vae


CONFIG_SUFFIXES = (".yaml", ".yml")


def config_files(dirs: Dirs) -> list[str]:
    """The model config files (original LDM YAML) in models/configs."""
    names: set[str] = set()
    for root in dirs.model_roots("configs"):
        if root.is_dir():
            names.update(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in CONFIG_SUFFIXES)
    return sorted(names)


def config_prediction_type(path: Path) -> str:
    """The prediction type an LDM config declares: `model.params.parameterization: v` is v-prediction; the
    default (no parameterization, or "eps") is epsilon."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"CheckpointLoader.config_name: {path.name} is not a readable YAML file ({exc})") from exc
    model = config.get("model") if isinstance(config, dict) else None
    params = model.get("params") if isinstance(model, dict) else None
    if not isinstance(params, dict):
        raise ValueError(f"CheckpointLoader.config_name: {path.name} has no model.params mapping (not an LDM config)")
    return "v_prediction" if params.get("parameterization") == "v" else "epsilon"


def config_path(dirs: Dirs, name: str) -> Path:
    """The path of a config from `config_files`; names that leave the folder or do not exist are refused."""
    for root in dirs.model_roots("configs"):
        candidate = safe_join(root, name)
        if candidate.is_file() and candidate.suffix in CONFIG_SUFFIXES:
            return candidate
    raise ValueError(f"CheckpointLoader.config_name: no config {name!r} in models/configs")


class CheckpointLoader(Node):
    """Load a checkpoint with an LDM config file (ComfyUI's older loader). The architecture is read from the weights;
    the config decides the prediction type (its `parameterization`), which file-name and weight clues only guess."""

    category = "advanced/loaders"
    inputs = [Combo("config_name", config_files, tooltip="an LDM YAML config in models/configs"),
              Combo("ckpt_name", models_in("checkpoints"), tooltip="a file or diffusers folder in models/checkpoints")]
    outputs = [Output(MODEL), Output(CLIP), Output(VAE)]

    def run(self, config_name: str, ckpt_name: str) -> tuple:
        config = config_path(self.ctx.dirs, config_name)
        prediction = config_prediction_type(config)  # a bad config is refused before the weights are read
        model, clip, vae = load_checkpoint(model_path(self.ctx, "checkpoints", ckpt_name), manager_of(self.ctx))
        if prediction != model.prediction_type:
            model = dataclasses.replace(model, prediction_type=prediction)
        return model, with_embeddings(clip, self.ctx.dirs), vae


class VAELoader(Node):
    """Load a VAE (original single file or diffusers folder) to use instead of the checkpoint's."""

    category = "loaders"
    inputs = [Combo("vae_name", models_in("vae"))]
    outputs = [Output(VAE)]

    def run(self, vae_name: str) -> tuple:
        return (load_vae(model_path(self.ctx, "vae", vae_name), manager_of(self.ctx)),)


class ControlNetLoader(Node):
    """Load a ControlNet or T2I-Adapter: a diffusers folder, or one file in the original or diffusers layout."""

    category = "loaders"
    inputs = [Combo("control_net_name", models_in("controlnet"))]
    outputs = [Output(CONTROL_NET)]

    def run(self, control_net_name: str) -> tuple:
        return (load_controlnet(model_path(self.ctx, "controlnet", control_net_name), manager_of(self.ctx)),)


class LoraLoader(Node):
    """Apply a LoRA to the model and the text encoder; the weights are patched in when the model is used."""

    category = "loaders"
    inputs = [Input("model", MODEL), Input("clip", CLIP), Combo("lora_name", models_in("loras")),
              Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01),
              Float("strength_clip", 1.0, min=-100.0, max=100.0, step=0.01)]
    outputs = [Output(MODEL), Output(CLIP)]

    def run(self, model: DiffusionModel, clip: ClipModel, lora_name: str, strength_model: float,
            strength_clip: float) -> tuple:
        if strength_model == 0 and strength_clip == 0:
            return (model, clip)
        identity, raw = read_lora(model_path(self.ctx, "loras", lora_name), manager_of(self.ctx))
        return apply_lora(model, clip, identity, raw, strength_model, strength_clip)


class LoraLoaderModelOnly(Node):
    """Apply a LoRA to the model only."""

    category = "loaders"
    inputs = [Input("model", MODEL), Combo("lora_name", models_in("loras")),
              Float("strength_model", 1.0, min=-100.0, max=100.0, step=0.01)]
    outputs = [Output(MODEL)]

    def run(self, model: DiffusionModel, lora_name: str, strength_model: float) -> tuple:
        if strength_model == 0:
            return (model,)
        identity, raw = read_lora(model_path(self.ctx, "loras", lora_name), manager_of(self.ctx))
        return (apply_lora(model, None, identity, raw, strength_model, 0.0)[0],)


class CLIPSetLastLayer(Node):
    """Stop the text encoder at an earlier layer (-1 the last, -2 the one before: "clip skip")."""

    category = "conditioning"
    inputs = [Input("clip", CLIP), Int("stop_at_clip_layer", -1, min=-24, max=-1, step=1)]
    outputs = [Output(CLIP)]

    def run(self, clip: ClipModel, stop_at_clip_layer: int) -> tuple:
        out = clip.clone()
        out.clip_skip = stop_at_clip_layer
        return (out,)


NODES = [CheckpointLoaderSimple, CheckpointLoader, VAELoader, ControlNetLoader, LoraLoader, LoraLoaderModelOnly, CLIPSetLastLayer,
         *merging.NODES, *attention_multiply.NODES, *saving.NODES, *clip_vision_nodes.NODES]
NODES += PART_LOADERS  # UNETLoader, CLIPLoader, DualCLIPLoader, DiffusersLoader, DiffControlNetLoader
