"""`comfy_api.latest.ui`: what a V3 node shows in the editor, returned as `io.NodeOutput(..., ui=...)`.

Previews are written to the temp folder as PNGs (with the prompt and extra_pnginfo of the node call when the
node asked for them), saved results are referred to by `SavedResult(filename, subfolder, type)`.
"""
from __future__ import annotations

import json
import os
import secrets
from typing import Any

import folder_paths

from ._iotypes import FolderType


class UIOutput:
    def as_dict(self) -> dict[str, Any]:
        raise NotImplementedError


_UIOutput = UIOutput  # ComfyUI's name


class SavedResult(dict):
    """A file the node wrote: `{"filename", "subfolder", "type"}`, as the editor fetches it from /view."""

    def __init__(self, filename: str, subfolder: str, type: FolderType) -> None:
        super().__init__(filename=filename, subfolder=subfolder, type=FolderType(type).value)

    @property
    def filename(self) -> str:
        return self["filename"]

    @property
    def subfolder(self) -> str:
        return self["subfolder"]

    @property
    def type(self) -> FolderType:
        return FolderType(self["type"])


class SavedImages(UIOutput):
    def __init__(self, results: list[SavedResult], is_animated: bool = False) -> None:
        self.results, self.is_animated = results, is_animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.results, **({"animated": (True,)} if self.is_animated else {})}


class SavedAudios(UIOutput):
    def __init__(self, results: list[SavedResult]) -> None:
        self.results = results

    def as_dict(self) -> dict[str, Any]:
        return {"audio": self.results}


def _folder(folder_type: FolderType) -> str:
    return {FolderType.input: folder_paths.get_input_directory, FolderType.output: folder_paths.get_output_directory
            }.get(FolderType(folder_type), folder_paths.get_temp_directory)()


class ImageSaveHelper:
    """Writes IMAGE batches ([B, H, W, C] in 0..1) as PNG files."""

    @staticmethod
    def metadata(cls: Any) -> Any:
        hidden = getattr(cls, "hidden", None)
        if hidden is None or (hidden.prompt is None and not hidden.extra_pnginfo):
            return None
        from PIL.PngImagePlugin import PngInfo  # noqa: PLC0415

        info = PngInfo()
        if hidden.prompt is not None:
            info.add_text("prompt", json.dumps(hidden.prompt))
        for key, value in (hidden.extra_pnginfo or {}).items():
            info.add_text(key, json.dumps(value))
        return info

    @staticmethod
    def save_images(images: Any, filename_prefix: str, folder_type: FolderType, cls: Any = None,
                    compress_level: int = 4) -> list[SavedResult]:
        import numpy as np  # noqa: PLC0415
        from PIL import Image  # noqa: PLC0415

        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, _folder(folder_type), images[0].shape[1], images[0].shape[0])
        metadata = ImageSaveHelper.metadata(cls)
        results = []
        for index, image in enumerate(images):
            pixels = np.clip(image.detach().cpu().float().numpy() * 255.0, 0, 255).astype(np.uint8)
            file = f"{name.replace('%batch_num%', str(index))}_{counter:05}_.png"
            Image.fromarray(pixels).save(os.path.join(folder, file), pnginfo=metadata, compress_level=compress_level)
            results.append(SavedResult(file, subfolder, folder_type))
            counter += 1
        return results

    @staticmethod
    def get_save_images_ui(images: Any, filename_prefix: str, cls: Any = None, compress_level: int = 4
                           ) -> SavedImages:
        return SavedImages(ImageSaveHelper.save_images(images, filename_prefix, FolderType.output, cls,
                                                       compress_level))


def _temp_prefix() -> str:
    return "ComfyUI_temp_" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))


class PreviewImage(UIOutput):
    """An IMAGE batch shown on the node (written to the temp folder)."""

    def __init__(self, image: Any, animated: bool = False, cls: Any = None, **_: Any) -> None:
        self.values = ImageSaveHelper.save_images(image, _temp_prefix(), FolderType.temp, cls, compress_level=1)
        self.animated = animated

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.values, "animated": (self.animated,)}


class PreviewMask(PreviewImage):
    """A MASK batch ([B, H, W]) shown as grey images."""

    def __init__(self, mask: Any, animated: bool = False, cls: Any = None, **kwargs: Any) -> None:
        grey = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).movedim(1, -1).expand(-1, -1, -1, 3)
        super().__init__(grey, animated, cls, **kwargs)


class PreviewAudio(UIOutput):
    def __init__(self, audio: dict, cls: Any = None, **_: Any) -> None:
        raise NotImplementedError("ui.PreviewAudio: sdgraph's ComfyUI layer does not write audio previews yet")

    def as_dict(self) -> dict[str, Any]:
        return {}


class PreviewVideo(UIOutput):
    def __init__(self, values: list, **_: Any) -> None:
        self.values = values

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.values, "animated": (True,)}


class PreviewUI3D(UIOutput):
    def __init__(self, model_file: Any, camera_info: Any, **_: Any) -> None:
        self.model_file, self.camera_info = model_file, camera_info

    def as_dict(self) -> dict[str, Any]:
        return {"result": [self.model_file, self.camera_info]}


class PreviewText(UIOutput):
    def __init__(self, value: str, **_: Any) -> None:
        self.value = value

    def as_dict(self) -> dict[str, Any]:
        return {"text": (self.value,)}


__all__ = ["UIOutput", "SavedResult", "SavedImages", "SavedAudios", "ImageSaveHelper", "PreviewImage",
           "PreviewMask", "PreviewAudio", "PreviewVideo", "PreviewUI3D", "PreviewText"]
