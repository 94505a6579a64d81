"""`comfy_api.latest`: ComfyUI's V3 node API, as packs import it (`from comfy_api.latest import io, ui`).

A pack written this way either lists its `io.ComfyNode` classes in NODE_CLASS_MAPPINGS, or exposes
`async def comfy_entrypoint()` returning a `ComfyExtension` whose `get_node_list()` gives them.
"""
from __future__ import annotations

from typing import Any

from . import _video, io, ui


class ComfyExtension:
    """What `comfy_entrypoint()` returns: a pack's V3 nodes (and a hook run when it loads)."""

    async def on_load(self) -> None:
        return None

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        raise NotImplementedError


class Input:
    """Type names of input values, for annotations."""

    Image = Any
    Audio = Any
    Mask = Any
    Latent = Any
    Video = _video.VideoInput


class InputImpl:
    VideoFromFile = _video.VideoFromFile
    VideoFromComponents = _video.VideoFromComponents


class Types:
    VideoCodec = _video.VideoCodec
    VideoContainer = _video.VideoContainer
    VideoComponents = _video.VideoComponents


comfy_io = io

__all__ = ["ComfyExtension", "Input", "InputImpl", "Types", "io", "comfy_io", "ui"]
