"""The video names `comfy_api.latest` exports (Types.VideoContainer, InputImpl.VideoFromComponents ...).

Enough for a pack to declare its nodes (combo choices of containers and codecs); writing video files is not
supported by sdgraph's layer: `VideoFromComponents.save_to` says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class VideoContainer(str, Enum):
    AUTO = "auto"
    MP4 = "mp4"

    @classmethod
    def as_input(cls) -> list[str]:
        return [member.value for member in cls]

    @classmethod
    def get_extension(cls, value: "str | VideoContainer") -> str:
        return "mp4" if cls(value) in (cls.AUTO, cls.MP4) else cls(value).value


class VideoCodec(str, Enum):
    AUTO = "auto"
    H264 = "h264"

    @classmethod
    def as_input(cls) -> list[str]:
        return [member.value for member in cls]


@dataclass
class VideoComponents:
    images: Any
    audio: Any = None
    frame_rate: Any = None
    metadata: Any = None


class VideoInput:
    """A video value passed between nodes."""

    def get_components(self) -> VideoComponents:
        raise NotImplementedError


class VideoFromComponents(VideoInput):
    def __init__(self, components: VideoComponents) -> None:
        self.components = components

    def get_components(self) -> VideoComponents:
        return self.components

    def save_to(self, path: str, format: Any = None, codec: Any = None, metadata: Any = None) -> None:
        raise NotImplementedError("sdgraph's ComfyUI layer cannot write video files (VideoFromComponents.save_to)")


class VideoFromFile(VideoInput):
    def __init__(self, file: Any) -> None:
        self.file = file
