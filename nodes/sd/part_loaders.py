"""Loader nodes for the parts of a model users keep apart: a UNet, text encoders, a diffusers folder, and a
ControlNet loaded with its model (ComfyUI's UNETLoader, CLIPLoader, DualCLIPLoader, DiffusersLoader,
DiffControlNetLoader).

Folders as ComfyUI names them: diffusion_models (models/unet, models/diffusion_models), text_encoders
(models/text_encoders, models/clip), diffusers, controlnet (models/controlnet, models/t2i_adapter).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sdgraph.node import Combo, Input, Node, Output, models_in
from sdgraph.nodes.sd.checkpoint_layout import UnsupportedCheckpoint
from sdgraph.nodes.sd.clip_file import KIND_NAMES, RECIPES, clip_of, load_text_encoder
from sdgraph.nodes.sd.common import manager_of
from sdgraph.nodes.sd.diff_controlnet import load_controlnet_for
from sdgraph.nodes.sd.embeddings import with_embeddings
from sdgraph.nodes.sd.loading import load_checkpoint
from sdgraph.nodes.sd.model_objects import DiffusionModel
from sdgraph.nodes.sd.unet_file import WEIGHT_DTYPES, load_unet
from sdgraph.paths import Dirs, UnsafePath, safe_join
from sdgraph.types import CLIP, CONTROL_NET, MODEL, VAE

# ComfyUI's lists, in its order; sdgraph runs the Stable Diffusion family's recipes only.
CLIP_TYPES = ("stable_diffusion", "stable_cascade", "sd3", "stable_audio", "mochi", "ltxv", "pixart", "cosmos",
              "lumina2", "wan", "hidream", "chroma", "ace", "omnigen2", "qwen_image", "hunyuan_image")
DUAL_CLIP_TYPES = ("sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image")
DEVICES = ("default", "cpu")


@contextmanager
def named(where: str) -> Iterator[None]:
    """Errors about a file say which input gave it."""
    try:
        yield
    except (UnsupportedCheckpoint, FileNotFoundError, UnsafePath) as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _find(dirs: Dirs, folder: str, name: str) -> Path:
    try:
        return dirs.find_model(folder, name)
    except FileNotFoundError:
        roots = ", ".join(str(r) for r in dirs.model_roots(folder))
        raise FileNotFoundError(f"no model {name!r} (looked in {roots})") from None


def _check_recipe(where: str, recipe: str, offered: tuple[str, ...]) -> None:
    if recipe not in offered:
        raise ValueError(f"{where}: {recipe!r} is not one of {list(offered)}")
    if recipe not in RECIPES:
        runs = "stable_diffusion" if "stable_diffusion" in offered else "sdxl"
        raise ValueError(f"{where}: {recipe!r} is a text encoder recipe for a model family sdgraph does not run; "
                         f"sdgraph runs Stable Diffusion 1.x, 2.x and XL: choose {runs}")


def _check_device(where: str, device: str, compute: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"{where}: {device!r} is not one of {list(DEVICES)}")
    if device == "cpu" and compute != "cpu":
        raise ValueError(f"{where}: 'cpu' (a text encoder kept on the CPU while the rest runs on {compute}) is not "
                         "supported by sdgraph's model manager, which runs every model on its one compute device; "
                         "choose default")


class UNETLoader(Node):
    """Load a UNet kept on its own (SD 1.x, 2.x or XL; LDM or diffusers names), optionally stored in fp8."""

    category = "advanced/loaders"
    inputs = [Combo("unet_name", models_in("diffusion_models"),
                    tooltip="a UNet file in models/unet or models/diffusion_models"),
              Combo("weight_dtype", WEIGHT_DTYPES,
                    tooltip="default: the usual precision; fp8_*: weights stored in fp8 (less memory), each layer "
                            "widened while it runs (fp8_e4m3fn_fast computes as fp8_e4m3fn here)")]
    outputs = [Output(MODEL)]

    def run(self, unet_name: str, weight_dtype: str) -> tuple:
        if weight_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"UNETLoader.weight_dtype: {weight_dtype!r} is not one of {list(WEIGHT_DTYPES)}")
        with named("UNETLoader.unet_name"):
            path = _find(self.ctx.dirs, "diffusion_models", unet_name)
            return (load_unet(path, manager_of(self.ctx), weight_dtype),)


class CLIPLoader(Node):
    """Load one text encoder: CLIP-L for SD 1.x, OpenCLIP-H for SD 2.x, OpenCLIP-G for the SDXL refiner."""

    category = "advanced/loaders"
    inputs = [Combo("clip_name", models_in("text_encoders"),
                    tooltip="a text encoder file in models/text_encoders or models/clip"),
              Combo("type", CLIP_TYPES, tooltip="the model family it is for (sdgraph runs stable_diffusion)"),
              Combo("device", DEVICES, optional=True, advanced=True)]
    outputs = [Output(CLIP)]

    def run(self, clip_name: str, type: str, device: str = "default") -> tuple:
        manager = manager_of(self.ctx)
        _check_recipe("CLIPLoader.type", type, CLIP_TYPES)
        _check_device("CLIPLoader.device", device, manager.compute_device.type)
        with named("CLIPLoader.clip_name"):
            encoder = load_text_encoder(_find(self.ctx.dirs, "text_encoders", clip_name), manager)
        return (with_embeddings(clip_of([encoder], type), self.ctx.dirs),)


class DualCLIPLoader(Node):
    """Load SDXL's two text encoders, CLIP-L and OpenCLIP-G, from two files (in either order)."""

    category = "advanced/loaders"
    inputs = [Combo("clip_name1", models_in("text_encoders")), Combo("clip_name2", models_in("text_encoders")),
              Combo("type", DUAL_CLIP_TYPES, tooltip="the model family they are for (sdgraph runs sdxl)"),
              Combo("device", DEVICES, optional=True, advanced=True)]
    outputs = [Output(CLIP)]

    def run(self, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> tuple:
        manager = manager_of(self.ctx)
        _check_recipe("DualCLIPLoader.type", type, DUAL_CLIP_TYPES)
        _check_device("DualCLIPLoader.device", device, manager.compute_device.type)
        encoders = []
        for where, name in (("clip_name1", clip_name1), ("clip_name2", clip_name2)):
            with named(f"DualCLIPLoader.{where}"):
                encoders.append(load_text_encoder(_find(self.ctx.dirs, "text_encoders", name), manager))
        kinds = sorted(e.kind for e in encoders)
        if kinds != ["clip_g", "clip_l"]:
            found = ", ".join(f"{w} {e.name} is {KIND_NAMES[e.kind]}"
                              for w, e in zip(("clip_name1", "clip_name2"), encoders))
            raise ValueError(f"DualCLIPLoader: sdxl takes one CLIP-L and one OpenCLIP-G; {found}")
        return (with_embeddings(clip_of(encoders, type), self.ctx.dirs),)


def diffusers_folders(dirs: Dirs) -> list[str]:
    """The folders under models/diffusers holding a diffusers pipeline (a model_index.json)."""
    names: set[str] = set()
    for root in dirs.model_roots("diffusers"):
        if root.is_dir():
            names.update(Path(d).relative_to(root).as_posix() for d, _, files in os.walk(root, followlinks=True)
                         if "model_index.json" in files)
    return sorted(names)


class DiffusersLoader(Node):
    """Load a diffusers pipeline folder (unet/, vae/, text_encoder/ ...) from models/diffusers."""

    category = "advanced/loaders/deprecated"
    inputs = [Combo("model_path", diffusers_folders, tooltip="a diffusers folder in models/diffusers")]
    outputs = [Output(MODEL), Output(CLIP), Output(VAE)]

    def run(self, model_path: str) -> tuple:
        with named("DiffusersLoader.model_path"):
            path = _diffusers_folder(self.ctx.dirs, model_path)
            model, clip, vae = load_checkpoint(path, manager_of(self.ctx))
        return model, with_embeddings(clip, self.ctx.dirs), vae


def _diffusers_folder(dirs: Dirs, name: str) -> Path:
    for root in dirs.model_roots("diffusers"):
        candidate = safe_join(root, name)
        if (candidate / "model_index.json").is_file():
            return candidate
    raise FileNotFoundError(f"no diffusers folder {name!r} (a folder with a model_index.json) in models/diffusers")


class DiffControlNetLoader(Node):
    """Load a ControlNet for a given MODEL: a difference ControlNet is completed with the model's weights; any
    other loads as ControlNetLoader loads it."""

    category = "loaders"
    inputs = [Input("model", MODEL), Combo("control_net_name", models_in("controlnet"))]
    outputs = [Output(CONTROL_NET)]

    def run(self, model: DiffusionModel, control_net_name: str) -> tuple:
        with named("DiffControlNetLoader.control_net_name"):
            path = _find(self.ctx.dirs, "controlnet", control_net_name)
            return (load_controlnet_for(path, model, manager_of(self.ctx)),)


NODES = [UNETLoader, CLIPLoader, DualCLIPLoader, DiffusersLoader, DiffControlNetLoader]
