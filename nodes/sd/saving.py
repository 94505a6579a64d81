"""Nodes that save models to the output folder in layouts ComfyUI reads back: checkpoints, UNet-only,
text-encoder-only and VAE files (`nodes.sd.checkpoint_writer`), with the workflow in the file's metadata."""
from __future__ import annotations

from typing import Any

from sdgraph.node import Hidden, Input, Node, NodeOutput, String
from sdgraph.nodes.sd import checkpoint_writer as writer
from sdgraph.nodes.sd.lora_extract import LoraSave
from sdgraph.nodes.sd.model_objects import ClipModel, DiffusionModel, VaeModel
from sdgraph.types import CLIP, MODEL, VAE

_CATEGORY = "advanced/model_merging"
_HIDDEN = [Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")]


def _model_metadata(model: DiffusionModel, base: dict[str, str], title: str) -> dict[str, str]:
    metadata = dict(base)
    arch = writer.architecture(model)
    if arch is not None:
        metadata.update({"modelspec.architecture": arch, "modelspec.sai_model_spec": "1.0.0",
                         "modelspec.implementation": "sgm", "modelspec.title": title})
    metadata["modelspec.predict_key"] = "v" if model.prediction_type == "v_prediction" else "epsilon"
    return metadata


class CheckpointSave(Node):
    """Save MODEL, CLIP and VAE as one single-file checkpoint (patches such as LoRAs and merges baked in)."""

    category = _CATEGORY
    output_node = True
    inputs = [Input("model", MODEL), Input("clip", CLIP), Input("vae", VAE),
              String("filename_prefix", "checkpoints/ComfyUI"), *_HIDDEN]
    outputs = []

    def run(self, model: DiffusionModel, clip: ClipModel, vae: VaeModel, filename_prefix: str,
            prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        metadata = _model_metadata(model, writer.workflow_metadata(prompt, extra_pnginfo), filename_prefix)
        writer.write_safetensors(self.ctx.dirs.output, filename_prefix,
                                 writer.checkpoint_state(model, clip, vae), metadata)
        return NodeOutput(ui={})


class ModelSave(Node):
    """Save the diffusion model alone (UNetLoader / UNETLoader read it), patches baked in."""

    category = _CATEGORY
    output_node = True
    inputs = [Input("model", MODEL), String("filename_prefix", "diffusion_models/ComfyUI"), *_HIDDEN]
    outputs = []

    def run(self, model: DiffusionModel, filename_prefix: str, prompt: Any = None,
            extra_pnginfo: Any = None) -> NodeOutput:
        metadata = _model_metadata(model, writer.workflow_metadata(prompt, extra_pnginfo), filename_prefix)
        writer.write_safetensors(self.ctx.dirs.output, filename_prefix, writer.checkpoint_state(model, None, None),
                                 metadata)
        return NodeOutput(ui={})


class CLIPSave(Node):
    """Save each text encoder as its own file (`<prefix>_clip_l_00001_.safetensors`, ...), patches baked in."""

    category = _CATEGORY
    output_node = True
    inputs = [Input("clip", CLIP), String("filename_prefix", "clip/ComfyUI"), *_HIDDEN]
    outputs = []

    def run(self, clip: ClipModel, filename_prefix: str, prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        metadata = {"format": "pt", **writer.workflow_metadata(prompt, extra_pnginfo)}
        for kind, state in writer.clip_encoder_states(clip).items():
            writer.write_safetensors(self.ctx.dirs.output, f"{filename_prefix}_{kind}", state, metadata)
        return NodeOutput(ui={})


class VAESave(Node):
    """Save the VAE alone, in the original (LDM) key layout VAE loaders read."""

    category = _CATEGORY
    output_node = True
    inputs = [Input("vae", VAE), String("filename_prefix", "vae/ComfyUI_vae"), *_HIDDEN]
    outputs = []

    def run(self, vae: VaeModel, filename_prefix: str, prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        writer.write_safetensors(self.ctx.dirs.output, filename_prefix, writer.vae_state(vae),
                                 writer.workflow_metadata(prompt, extra_pnginfo))
        return NodeOutput(ui={})


NODES = [CheckpointSave, ModelSave, CLIPSave, VAESave, LoraSave]
