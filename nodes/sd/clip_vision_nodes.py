"""CLIP vision nodes: CLIPVisionLoader, CLIPVisionEncode, and the checkpoint loaders that carry an image encoder
(unCLIPCheckpointLoader for SD 2.1 unCLIP, ImageOnlyCheckpointLoader for SVD-style image-to-video files).

An image encoder inside a checkpoint sits in the OpenCLIP layout under the prefix its family uses (see
`VISION_PREFIXES`). ImageOnlyCheckpointLoader's scope: the CLIP vision model and an image (LDM) VAE load as
they are; SVD's video UNet and its temporal VAE decoder are other model families that sdgraph does not run, so
those outputs are placeholders that raise a clear error when a node uses them. An SD-family UNet in such a file
(without text encoder) loads as UNETLoader loads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdgraph.node import Combo, Input, Node, Output, models_in
from sdgraph.nodes.sd.checkpoint_layout import UnsupportedCheckpoint
from sdgraph.nodes.sd.clip_vision import (ClipVision, ClipVisionOutput, NotClipVision, load_clip_vision_file,
                                          load_clip_vision_weights)
from sdgraph.nodes.sd.common import manager_of, model_path
from sdgraph.nodes.sd.embeddings import with_embeddings
from sdgraph.nodes.sd.loading import load_checkpoint, load_vae
from sdgraph.nodes.sd.unclip import CLIP_VISION_OUTPUT
from sdgraph.nodes.sd.weight_file import open_weights
from sdgraph.types import CLIP, IMAGE, MODEL, VAE

CLIP_VISION = "CLIP_VISION"
# where checkpoints keep their image encoder: SD 2.1 unCLIP, SVD / SV3D, Stable Zero123
VISION_PREFIXES = ("embedder.model.visual.", "conditioner.embedders.0.open_clip.model.visual.",
                   "cond_stage_model.model.visual.")
VIDEO_UNET_MARKS = ("time_stack", "time_mixer", "time_mix_")
VIDEO_VAE_MARKS = ("time_stack", "time_mix", "time_conv_out")


class Unavailable:
    """A socket value that cannot be produced here: using it in any way raises its message."""

    def __init__(self, message: str) -> None:
        object.__setattr__(self, "_message", message)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise UnsupportedCheckpoint(object.__getattribute__(self, "_message"))

    def cache_nbytes(self) -> int:
        return 0


def vision_prefix(sd: Any) -> str | None:
    return next((p for p in VISION_PREFIXES if f"{p}transformer.resblocks.0.attn.in_proj_weight" in sd), None)


def checkpoint_clip_vision(path: Path, manager: Any, where: str) -> ClipVision | None:
    """The image encoder inside a checkpoint (cached while the file is unchanged), None when it has none."""
    def load(p: Path) -> ClipVision | None:
        sd = open_weights(p)
        prefix = vision_prefix(sd)
        if prefix is None:
            return None
        try:
            return load_clip_vision_weights(sd, prefix, p.name, manager)
        except NotClipVision as exc:
            raise UnsupportedCheckpoint(f"{where}: {exc}") from exc

    return manager.load(path, "checkpoint_clip_vision", load)


def _no_vision(where: str, name: str) -> Unavailable:
    return Unavailable(f"{where}: {name} holds no CLIP vision model (none of {', '.join(VISION_PREFIXES)}); "
                       "load an image encoder from models/clip_vision with CLIPVisionLoader")


class CLIPVisionLoader(Node):
    """Load a CLIP image encoder (ViT-L/14, ViT-H/14 or ViT-bigG/14) from models/clip_vision."""

    category = "loaders"
    inputs = [Combo("clip_name", models_in("clip_vision"), tooltip="an image encoder file in models/clip_vision")]
    outputs = [Output(CLIP_VISION)]

    def run(self, clip_name: str) -> tuple:
        try:
            return (load_clip_vision_file(model_path(self.ctx, "clip_vision", clip_name), manager_of(self.ctx)),)
        except NotClipVision as exc:
            raise ValueError(f"CLIPVisionLoader.clip_name: {exc}") from exc


class CLIPVisionEncode(Node):
    """Encode images with a CLIP image encoder, for unCLIP, style models and image prompts."""

    category = "conditioning"
    inputs = [Input("clip_vision", CLIP_VISION), Input("image", IMAGE),
              Combo("crop", ["center", "none"],
                    tooltip="center: scale the short side and crop the middle square; none: squash to a square")]
    outputs = [Output(CLIP_VISION_OUTPUT)]

    def run(self, clip_vision: ClipVision, image: torch.Tensor, crop: str) -> tuple[ClipVisionOutput]:
        if image.dim() != 4 or image.shape[-1] < 3:
            raise ValueError(f"CLIPVisionEncode.image: expected [B, H, W, 3] pixels, got {list(image.shape)}")
        return (clip_vision.encode_image(image, crop=crop == "center"),)


class unCLIPCheckpointLoader(Node):
    """Load an unCLIP checkpoint (SD 2.1 unCLIP): the model, text encoder, VAE and its own CLIP image encoder."""

    category = "loaders"
    inputs = [Combo("ckpt_name", models_in("checkpoints"), tooltip="an unCLIP checkpoint in models/checkpoints")]
    outputs = [Output(MODEL), Output(CLIP), Output(VAE), Output(CLIP_VISION)]

    def run(self, ckpt_name: str) -> tuple:
        path, manager = model_path(self.ctx, "checkpoints", ckpt_name), manager_of(self.ctx)
        model, clip, vae = load_checkpoint(path, manager)
        vision = None if path.is_dir() else checkpoint_clip_vision(path, manager, "unCLIPCheckpointLoader.ckpt_name")
        if vision is None:
            vision = _no_vision("unCLIPCheckpointLoader.ckpt_name", ckpt_name)
        return model, with_embeddings(clip, self.ctx.dirs), vae, vision


class ImageOnlyCheckpointLoader(Node):
    """Load an image-conditioned checkpoint (SVD-style: no text encoder): its CLIP image encoder and VAE. Scope:
    SVD's video UNet and temporal VAE decoder are not supported; those outputs raise a clear error when used."""

    category = "loaders/video_models"
    inputs = [Combo("ckpt_name", models_in("checkpoints"), tooltip="a checkpoint in models/checkpoints")]
    outputs = [Output(MODEL), Output(CLIP_VISION), Output(VAE)]

    def run(self, ckpt_name: str) -> tuple:
        where = "ImageOnlyCheckpointLoader.ckpt_name"
        path, manager = model_path(self.ctx, "checkpoints", ckpt_name), manager_of(self.ctx)
        if path.is_dir():
            raise ValueError(f"{where}: {ckpt_name} is a folder; this loader reads single checkpoint files")
        sd = open_weights(path)
        vision = checkpoint_clip_vision(path, manager, where)
        if vision is None:
            raise ValueError(f"{where}: {ckpt_name} holds no CLIP vision model (none of {', '.join(VISION_PREFIXES)})")
        return _image_only_model(sd, path, manager, where), vision, _image_only_vae(sd, path, manager, where)


def _image_only_model(sd: Any, path: Path, manager: Any, where: str) -> Any:
    from sdgraph.nodes.sd.unet_file import load_unet

    unet_keys = [k for k in sd if k.startswith("model.diffusion_model.")]
    if not unet_keys:
        return Unavailable(f"{where}: {path.name} holds no UNet (model.diffusion_model.*)")
    if any(mark in k for k in unet_keys for mark in VIDEO_UNET_MARKS):
        return Unavailable(f"{where}: {path.name} holds a video UNet (Stable Video Diffusion); SVD video models "
                           "are not supported, only this file's CLIP_VISION and VAE outputs can be used")
    try:
        return load_unet(path, manager)
    except UnsupportedCheckpoint as exc:
        return Unavailable(f"{where}: its UNet is not an SD 1.x/2.x/XL one: {exc}")


def _image_only_vae(sd: Any, path: Path, manager: Any, where: str) -> Any:
    vae_keys = [k for k in sd if k.startswith("first_stage_model.")]
    if not vae_keys:
        return Unavailable(f"{where}: {path.name} holds no VAE (first_stage_model.*)")
    if any(mark in k for k in vae_keys for mark in VIDEO_VAE_MARKS):
        return Unavailable(f"{where}: {path.name}'s VAE has SVD's temporal decoder, which is not supported; load "
                           "an image VAE with VAELoader")
    return load_vae(path, manager)


NODES = [CLIPVisionLoader, CLIPVisionEncode, unCLIPCheckpointLoader, ImageOnlyCheckpointLoader]
