"""Nodes on the output and temp folders: load a picture back from output/, save a batch as one animated PNG, show
a mask as a picture."""
from __future__ import annotations

import secrets
from typing import Any

import torch

from sdgraph.limits import current_limits
from sdgraph.node import Combo, Float, Hidden, Input, Int, Node, NodeOutput, Output, String
from sdgraph.nodes.sd.image_files import (
    file_sha256, input_path, load_refusal, output_images, png_metadata, read_image, save_apng, save_pngs,
)
from sdgraph.nodes.sd.mask_nodes import as_masks
from sdgraph.paths import Dirs
from sdgraph.uiformat.pictures import comfy_metadata
from sdgraph.types import IMAGE, MASK

# What ComfyUI's frontend needs to offer the output folder's files, newest first, with a refresh button.
OUTPUT_LIST = {"route": "/internal/files/output", "refresh_button": True, "control_after_refresh": "first"}


class LoadImageOutput(Node):
    """An image from the output directory (`name [output]`), with a mask from its alpha channel, to work on a
    result again. As in ComfyUI, a name without an annotation is looked up in the input directory."""

    category = "image"
    inputs = [Combo("image", output_images, image_upload=True, image_folder="output", remote=OUTPUT_LIST)]
    outputs = [Output(IMAGE), Output(MASK)]
    self_checked = ("image",)  # any annotated name that exists loads, listed or not

    def run(self, image: str) -> tuple:
        return read_image(input_path(self.ctx.dirs, image), self.ctx.limits, "LoadImageOutput.image")

    @classmethod
    def fingerprint(cls, dirs: Dirs, image: str = "", **_: Any) -> str:
        return file_sha256(input_path(dirs, image))

    @classmethod
    def validate_inputs(cls, dirs: Dirs, image: str = "", **_: Any) -> str | None:
        return load_refusal(dirs, current_limits(), image, "LoadImageOutput.image")


class SaveAnimatedPNG(Node):
    """Save the batch as one animated PNG in the output directory (never overwriting), the workflow in its
    `comf` chunks."""

    category = "image/animation"
    output_node = True
    inputs = [Input("images", IMAGE), String("filename_prefix", "ComfyUI"),
              Float("fps", 6.0, min=0.01, max=1000.0, step=0.01), Int("compress_level", 4, min=0, max=9),
              Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")]
    outputs = []

    def run(self, images: torch.Tensor, filename_prefix: str, fps: float, compress_level: int,
            prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        records = save_apng(images, self.ctx.dirs.output, filename_prefix, "output",
                            comfy_metadata(prompt, extra_pnginfo, "apng"), fps=fps, compress_level=compress_level)
        return NodeOutput(ui={"images": records, "animated": [True]})


class MaskPreview(Node):
    """Show masks as grey pictures (white = 1) without keeping them: PNGs in the temp directory."""

    category = "mask"
    output_node = True
    inputs = [Input("mask", MASK), Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")]
    outputs = []

    def run(self, mask: torch.Tensor, prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        pictures = as_masks(mask)[..., None].expand(-1, -1, -1, 3)
        prefix = "sdgraph_temp_" + secrets.token_hex(3)
        records = save_pngs(pictures, self.ctx.dirs.temp, prefix, "temp", png_metadata(prompt, extra_pnginfo))
        return NodeOutput(ui={"images": records})


NODES = [LoadImageOutput, SaveAnimatedPNG, MaskPreview]
