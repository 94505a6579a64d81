"""Image files in and out: reading inputs as IMAGE/MASK tensors, writing PNGs with the workflow embedded."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from sdgraph.limits import Limits, check_count, check_memory, refusal
from sdgraph.output_names import next_counter, output_folder, write_new
from sdgraph.paths import Dirs, safe_join
from sdgraph.uiformat.pictures import comfy_metadata

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# `name [output]`: a file in another client-facing directory (ComfyUI's annotated names)
ANNOTATION = re.compile(r"\s*\[(input|output|temp)\]$")
DECODED_CHANNELS = 4  # read_image keeps RGB and a mask per frame, float32


def input_images(dirs: Dirs) -> list[str]:
    """Image files at the top of the input directory (the LoadImage combo)."""
    if not dirs.input.is_dir():
        return []
    return sorted(p.name for p in dirs.input.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def output_images(dirs: Dirs) -> list[str]:
    """Image files at the top of the output directory, newest first, by their annotated names (`pic.png [output]`,
    what LoadImageOutput takes)."""
    folder = dirs.of_type("output")
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return [f"{p.name} [output]" for p in sorted(files, key=lambda p: (-p.stat().st_mtime, p.name))]


def input_path(dirs: Dirs, name: str) -> Path:
    """The file of a LoadImage name: `pic.png`, `sub/pic.png`, or annotated with its directory, `pic.png [output]`
    (input when there is none); refused when it would leave that directory."""
    if not isinstance(name, str):
        raise ValueError(f"an image name must be a string, got {type(name).__name__}")
    match = ANNOTATION.search(name)
    kind = match.group(1) if match else "input"
    return safe_join(dirs.of_type(kind), name[:match.start()] if match else name)


def missing_input(dirs: Dirs, name: str) -> str | None:
    """Why an image name cannot be loaded (outside its directory, not a file), None when it can."""
    try:
        path = input_path(dirs, name)
        if path.is_file():
            return None
    except (ValueError, OSError) as exc:  # UnsafePath, a name too long, a symlink loop
        return f"Invalid image file: {name!r}: {exc}"
    return f"Invalid image file: {name!r}: no such file"


def load_refusal(dirs: Dirs, limits: Limits, name: str, where: str, all_frames: bool = True) -> str | None:
    """Why an image name cannot be loaded (no such file, not an image, over the budget from its header), None when
    it can."""
    problem = missing_input(dirs, name)
    if problem is not None:
        return problem
    path = input_path(dirs, name)
    try:
        return refusal(lambda: check_image_file(limits, where, path, all_frames))
    except OSError as exc:  # not an image Pillow can read
        return f"{where}: {name!r} is not a readable image: {exc}"


def check_image_file(limits: Limits, where: str, path: Path, all_frames: bool = True) -> None:
    """Refuse an image whose decoded frames would be over the budget, from its header (nothing is decoded)."""
    with Image.open(path) as opened:
        frames = int(getattr(opened, "n_frames", 1)) if all_frames else 1
        width, height = opened.size
    check_count(where, "the number of frames", frames, limits.max_image_frames, "--max-image-frames")
    check_count(where, "the decoded pixels (frames x width x height)", frames * width * height,
                limits.max_image_pixels, "--max-image-megapixels")
    check_memory(limits, where, "the decoded frames", (frames, height, width, DECODED_CHANNELS))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img).astype(np.float32) / 255.0)


def read_image(path: Path, limits: Limits, where: str = "LoadImage.image") -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [F,H,W,3] and MASK [F,H,W] (1 - alpha; zeros without alpha) from every frame of the same size."""
    check_image_file(limits, where, path)
    images, masks = [], []
    with Image.open(path) as opened:
        for frame in ImageSequence.Iterator(opened):
            frame = ImageOps.exif_transpose(frame)
            if frame.mode == "I":
                frame = frame.point(lambda v: v * (1 / 255))
            rgb = frame.convert("RGB")
            if images and rgb.size != (images[0].shape[1], images[0].shape[0]):
                break
            images.append(to_tensor(rgb))
            if "A" in frame.getbands():
                masks.append(1.0 - to_tensor(frame.getchannel("A")))
            else:
                masks.append(torch.zeros(rgb.size[1], rgb.size[0]))
    return torch.stack(images), torch.stack(masks)


def read_channel(path: Path, channel: str, limits: Limits, where: str = "LoadImageMask.image") -> torch.Tensor:
    """MASK [1,H,W] from one channel ("alpha" is inverted: transparent = 1); zeros if the channel is absent."""
    check_image_file(limits, where, path, all_frames=False)
    with Image.open(path) as opened:
        img = ImageOps.exif_transpose(opened)
        band = {"alpha": "A", "red": "R", "green": "G", "blue": "B"}[channel]
        if img.mode not in ("RGBA", "RGB", "LA", "L"):
            img = img.convert("RGBA")
        if band not in img.getbands():
            if band != "A" and img.mode in ("L", "LA"):
                return to_tensor(img.getchannel("L"))[None]
            return torch.zeros(1, img.size[1], img.size[0])
        mask = to_tensor(img.getchannel(band))
    return (1.0 - mask if band == "A" else mask)[None]


def png_metadata(prompt: dict[str, Any] | None, extra_pnginfo: dict[str, Any] | None) -> PngInfo:
    """Text chunks `prompt` and one per extra_pnginfo key (`workflow`), JSON each, as ComfyUI writes them."""
    return comfy_metadata(prompt, extra_pnginfo, "png")


def webp_metadata(prompt: dict[str, Any] | None, extra_pnginfo: dict[str, Any] | None) -> Image.Exif:
    """EXIF entries `prompt:<json>` (tag 0x0110) and `workflow:<json>` (0x010F, then downwards), as ComfyUI
    writes them in WebP."""
    return comfy_metadata(prompt, extra_pnginfo, "webp")


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """An IMAGE in [0, 1] as 8-bit pixels, truncated (not rounded) as ComfyUI writes them."""
    return np.clip(255.0 * image.float().cpu().numpy(), 0, 255).astype(np.uint8)


def save_pngs(images: torch.Tensor, root: Path, prefix: str, kind: str, metadata: PngInfo | None,
              compress_level: int = 4) -> list[dict[str, str]]:
    """Write each image as `<prefix>_<counter:05>_.png` under root, never overwriting; return UI records."""
    folder, folder_part, stem = output_folder(root, prefix)
    counter = next_counter(folder, stem)
    results = []
    for image in images:
        png = Image.fromarray(to_uint8(image))
        name, counter = write_new(folder, stem, ".png", counter,
                                  lambda f: png.save(f, format="PNG", pnginfo=metadata, compress_level=compress_level))
        results.append({"filename": name, "subfolder": folder_part, "type": kind})
        counter += 1
    return results


def save_webp(images: torch.Tensor, root: Path, prefix: str, kind: str, exif: Image.Exif | None,
              fps: float = 6.0, lossless: bool = False, quality: int = 80, method: int = 4) -> list[dict[str, str]]:
    """Write the batch as one animated WebP (one frame per image; a still picture for a batch of one),
    `<prefix>_<counter:05>_.webp` under root, never overwriting, with the EXIF metadata of webp_metadata;
    return its UI record."""
    folder, folder_part, stem = output_folder(root, prefix)
    frames = [Image.fromarray(to_uint8(image)) for image in images]
    options: dict[str, Any] = {"lossless": lossless, "quality": quality, "method": method}
    if exif is not None:
        options["exif"] = exif
    if len(frames) > 1:
        options.update(save_all=True, append_images=frames[1:], duration=int(1000.0 / fps))
    name, _ = write_new(folder, stem, ".webp", next_counter(folder, stem, ".webp"),
                        lambda f: frames[0].save(f, format="WEBP", **options))
    return [{"filename": name, "subfolder": folder_part, "type": kind}]


def save_apng(images: torch.Tensor, root: Path, prefix: str, kind: str, metadata: PngInfo | None,
              fps: float = 6.0, compress_level: int = 4) -> list[dict[str, str]]:
    """Write the batch as one animated PNG (one frame per image, 1000 / fps ms each), `<prefix>_<counter:05>_.png`
    under root, never overwriting, with the metadata chunks of `metadata`; return its UI record."""
    folder, folder_part, stem = output_folder(root, prefix)
    frames = [Image.fromarray(to_uint8(image)) for image in images]
    name, _ = write_new(folder, stem, ".png", next_counter(folder, stem),
                        lambda f: frames[0].save(f, format="PNG", pnginfo=metadata, compress_level=compress_level,
                                                 save_all=True, duration=int(1000.0 / fps),
                                                 append_images=frames[1:]))
    return [{"filename": name, "subfolder": folder_part, "type": kind}]
