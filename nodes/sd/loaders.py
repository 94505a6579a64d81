"""Loader nodes: checkpoints, VAEs, ControlNets, LoRAs, and the CLIP layer to stop at."""
from __future__ import annotations

from sdgraph.node import Combo, Float, Input, Int, Node, Output, String, models_in
from sdgraph.nodes.sd.common import manager_of, model_path
from sdgraph.nodes.sd.loading import load_checkpoint, load_controlnet, load_vae
from sdgraph.nodes.sd.lora import apply_lora, read_lora
from sdgraph.nodes.sd.model_objects import ClipModel, DiffusionModel
from sdgraph.types import CLIP, CONTROL_NET, MODEL, VAE


class CheckpointLoader(Node):
    """Load a Stable Diffusion checkpoint (single file or diffusers folder; SD 1.x, 2.x, XL detected)."""

    category = "loaders"
    aliases = ("CheckpointLoaderSimple",)
    inputs = [
        Combo("ckpt_name", models_in("checkpoints"), tooltip="a file or diffusers folder in models/checkpoints"),
        # ComfyUI's legacy CheckpointLoader also takes a config file; the architecture is detected here instead.
        String("config_name", "", optional=True, tooltip="ignored: the architecture is read from the weights"),
    ]
    outputs = [Output(MODEL), Output(CLIP), Output(VAE)]

    def run(self, ckpt_name: str, config_name: str = "") -> tuple:
        return load_checkpoint(model_path(self.ctx, "checkpoints", ckpt_name), manager_of(self.ctx))


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
    inputs = [Input("clip", CLIP), Int("stop_at_clip_layer", -1, min=-24, max=-1)]
    outputs = [Output(CLIP)]

    def run(self, clip: ClipModel, stop_at_clip_layer: int) -> tuple:
        out = clip.clone()
        out.clip_skip = stop_at_clip_layer
        return (out,)


NODES = [CheckpointLoader, VAELoader, ControlNetLoader, LoraLoader, LoraLoaderModelOnly, CLIPSetLastLayer]
