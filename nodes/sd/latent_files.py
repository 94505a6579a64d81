"""ComfyUI's `.latent` files: SaveLatent writes a LATENT to output/, LoadLatent reads one from input/.

A `.latent` file is a safetensors file holding the samples [B, C, h, w] as "latent_tensor" and an empty tensor
"latent_format_version_0" marking them as unscaled (the convention of LATENT, see `model_objects`). A file without
the marker is from before that convention: its samples were multiplied by SD 1.x's 0.18215, so they are divided
by it on loading, as ComfyUI does. The safetensors metadata carries the workflow: "prompt" (JSON, or "" when
there is none) and one JSON entry per extra_pnginfo key ("workflow").
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sdgraph.limits import Limits, check_memory, current_limits, refusal
from sdgraph.node import Combo, Hidden, Input, Node, NodeOutput, Output, String
from sdgraph.paths import Dirs
from sdgraph.types import LATENT

from sdgraph.nodes.sd.image_files import file_sha256, input_path, next_counter, output_folder, write_new

EXTENSION = ".latent"
TENSOR = "latent_tensor"
VERSION_MARKER = "latent_format_version_0"
LEGACY_SCALE = 0.18215


class LatentFileError(ValueError):
    """A `.latent` file that cannot be read as a LATENT."""


def latent_bytes(samples: torch.Tensor, prompt: Any = None, extra_pnginfo: dict[str, Any] | None = None) -> bytes:
    """The bytes of a `.latent` file holding `samples` (unscaled) and the workflow metadata."""
    from safetensors.torch import save  # noqa: PLC0415

    metadata = {"prompt": json.dumps(prompt) if prompt is not None else ""}
    metadata.update({key: json.dumps(value) for key, value in (extra_pnginfo or {}).items()})
    tensors = {TENSOR: samples.detach().cpu().contiguous(), VERSION_MARKER: torch.tensor([])}
    return save(tensors, metadata=metadata)


def save_latent(samples: torch.Tensor, root: Path, prefix: str, prompt: Any = None,
                extra_pnginfo: dict[str, Any] | None = None) -> dict[str, str]:
    """Write `<prefix>_<counter:05>_.latent` under root, never overwriting; returns its UI record."""
    data = latent_bytes(samples, prompt, extra_pnginfo)
    folder, subfolder, stem = output_folder(root, prefix)
    name, _ = write_new(folder, stem, EXTENSION, next_counter(folder, stem, EXTENSION), lambda f: f.write(data))
    return {"filename": name, "subfolder": subfolder, "type": "output"}


def latent_shape(path: Path) -> tuple[int, ...]:
    """The shape of a `.latent` file's samples, from its header; LatentFileError when it holds no LATENT."""
    from safetensors import safe_open  # noqa: PLC0415

    try:
        with safe_open(str(path), framework="pt") as f:
            if TENSOR not in f.keys():
                raise LatentFileError(f"{path.name}: no {TENSOR!r} tensor (has {sorted(f.keys())})")
            shape = tuple(f.get_slice(TENSOR).get_shape())
    except LatentFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for a damaged header
        raise LatentFileError(f"{path.name}: not a safetensors .latent file: {exc}") from exc
    if len(shape) != 4:
        raise LatentFileError(f"{path.name}: {TENSOR!r} has shape {list(shape)}; a LATENT is [B, C, h, w]")
    return shape


def read_latent(path: Path, limits: Limits, where: str = "LoadLatent.latent") -> dict[str, torch.Tensor]:
    """A LATENT from a `.latent` file (legacy files without the version marker scaled back), checked against the
    memory budget from its header before anything is read."""
    from safetensors.torch import load_file  # noqa: PLC0415

    check_memory(limits, where, "the latent", latent_shape(path))
    tensors = load_file(str(path), device="cpu")
    samples = tensors[TENSOR].float()
    if VERSION_MARKER not in tensors:
        samples = samples * (1.0 / LEGACY_SCALE)
    return {"samples": samples}


def input_latents(dirs: Dirs) -> list[str]:
    """`.latent` files at the top of the input directory (the LoadLatent combo)."""
    if not dirs.input.is_dir():
        return []
    return sorted(p.name for p in dirs.input.iterdir() if p.is_file() and p.name.endswith(EXTENSION))


def loadable_latent(dirs: Dirs, name: str, where: str = "LoadLatent.latent") -> str | None:
    """Why a LoadLatent name cannot be loaded within the budget, None when it can."""
    try:
        path = input_path(dirs, name)
        if not path.is_file():
            return f"Invalid latent file: {name!r}: no such file"
        return refusal(lambda: check_memory(current_limits(), where, "the latent", latent_shape(path)))
    except (ValueError, OSError) as exc:  # UnsafePath, LatentFileError, a name too long
        return f"Invalid latent file: {name!r}: {exc}"


class SaveLatent(Node):
    """Save a LATENT as a ComfyUI `.latent` file in the output directory, with the workflow in its metadata."""

    category = "_for_testing"
    output_node = True
    inputs = [Input("samples", LATENT), String("filename_prefix", "latents/ComfyUI"),
              Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")]
    outputs = []

    def run(self, samples: dict[str, Any], filename_prefix: str = "latents/ComfyUI", prompt: Any = None,
            extra_pnginfo: Any = None) -> NodeOutput:
        record = save_latent(samples["samples"], self.ctx.dirs.output, filename_prefix, prompt, extra_pnginfo)
        return NodeOutput(ui={"latents": [record]})


class LoadLatent(Node):
    """Load a ComfyUI `.latent` file from the input directory."""

    category = "_for_testing"
    inputs = [Combo("latent", input_latents)]
    outputs = [Output(LATENT)]
    self_checked = ("latent",)  # names in subfolders and `[output]`-annotated ones are valid beyond the list

    def run(self, latent: str) -> tuple:
        return (read_latent(input_path(self.ctx.dirs, latent), self.ctx.limits),)

    @classmethod
    def fingerprint(cls, dirs: Dirs, latent: str = "", **_: Any) -> str:
        return file_sha256(input_path(dirs, latent))

    @classmethod
    def validate_inputs(cls, dirs: Dirs, latent: str = "", **_: Any) -> str | None:
        return loadable_latent(dirs, latent)


NODES = [SaveLatent, LoadLatent]
