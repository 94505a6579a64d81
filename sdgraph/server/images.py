"""The few image operations the file routes need, each guarded against decompression bombs (Pillow's limit).

All of them block: call them off the event loop.
"""
from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import IO, Any, Callable, TypeVar

from PIL import Image, ImageOps

from sdgraph.server.errors import ApiError
from sdgraph.server.fserrors import api_error

Result = TypeVar("Result")
PREVIEW_FORMATS = {"webp": ("WEBP", "image/webp"), "jpeg": ("JPEG", "image/jpeg"), "jpg": ("JPEG", "image/jpeg"),
                   "png": ("PNG", "image/png")}


def pixel_limit() -> int | None:
    return Image.MAX_IMAGE_PIXELS


def open_image(source: Any, *, required: bool = True) -> Image.Image | None:
    """Open an image lazily (header only), refusing one with more pixels than Pillow's limit.

    With required=False a file that is not an image gives None (uploads may be other media).
    """
    try:
        image = Image.open(source)
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - Pillow's format plugins raise all sorts on malformed data
        if (fs_error := api_error(exc)) is not None:
            raise fs_error from None
        if not required:
            return None
        raise ApiError(400, "not_an_image", f"not a readable image: {type(exc).__name__}: {exc}") from None
    limit = pixel_limit()
    width, height = image.size
    if limit is not None and width * height > limit:
        image.close()
        raise ApiError(413, "image_too_large", f"{width}x{height} pixels is over the limit of {limit}")
    return image


def _load(image: Image.Image) -> Image.Image:
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise ApiError(413, "image_too_large", str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - as above
        raise ApiError(400, "not_an_image", f"the image data is damaged: {type(exc).__name__}: {exc}") from None
    return image


def parse_preview(value: str) -> tuple[str, str, int]:
    """`webp;90` -> (PIL format, content type, quality)."""
    name, _, quality_text = value.partition(";")
    found = PREVIEW_FORMATS.get(name.strip().lower())
    if found is None:
        raise ApiError(400, "invalid_query", f"preview must be webp, jpeg or png with an optional ';quality', "
                                             f"got {value[:40]!r}")
    quality = 90
    if quality_text.strip():
        try:
            quality = int(quality_text)
        except ValueError:
            raise ApiError(400, "invalid_query", f"preview quality must be an integer, got {quality_text[:20]!r}") \
                from None
        if not 1 <= quality <= 100:
            raise ApiError(400, "invalid_query", "preview quality must be between 1 and 100")
    return found[0], found[1], quality


def _guarded(function: Callable[..., Result]) -> Callable[..., Result]:
    """Turn Pillow's failure on an odd image (exotic mode, damaged data) into a 400, never a 500."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Result:
        try:
            return function(*args, **kwargs)
        except ApiError:
            raise
        except Exception as exc:  # noqa: BLE001
            if (fs_error := api_error(exc)) is not None:
                raise fs_error from None  # the file, not the image, is the problem
            raise ApiError(400, "not_an_image", f"could not process the image: {type(exc).__name__}: {exc}") \
                from None

    return wrapper


@_guarded
def render(path: Path, channel: str, preview: str | None) -> tuple[bytes, str]:
    """An image file as the client asked for it: one channel set (rgb, a, rgba) and/or a compressed preview."""
    fmt, content_type, quality = parse_preview(preview) if preview else ("PNG", "image/png", 0)
    image = open_image(path)
    assert image is not None
    with image:
        image = _load(image)
        if channel == "rgb":
            out = image.convert("RGB")
        elif channel == "a":
            alpha = image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
            out = Image.new("RGBA", image.size)
            out.putalpha(alpha)
        else:
            out = image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert("RGBA")
        if fmt == "JPEG" and out.mode not in ("RGB", "L"):
            out = out.convert("RGB")
        buffer = io.BytesIO()
        options: dict[str, Any] = {"quality": quality} if fmt in ("JPEG", "WEBP") else {}
        out.save(buffer, format=fmt, **options)
    return buffer.getvalue(), content_type


class _Borrowed:
    """A file handed to Pillow without letting it close the file (the caller still owns it)."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)  # read, readline, seek, tell, ...

    def close(self) -> None:
        pass


def check_upload(file: IO[bytes]) -> None:
    """Refuse an uploaded image whose header announces a decompression bomb; other media pass through."""
    file.seek(0)
    image = open_image(_Borrowed(file), required=False)
    if image is not None:
        image.close()
    file.seek(0)


@_guarded
def apply_mask(original: Path, mask: IO[bytes]) -> bytes:
    """The original image with the mask's alpha as its alpha channel, as PNG (the mask editor's upload)."""
    mask.seek(0)
    base = open_image(original)
    painted = open_image(_Borrowed(mask))
    assert base is not None and painted is not None
    with base, painted:
        rgba = ImageOps.exif_transpose(_load(base)).convert("RGBA")
        _load(painted)
        alpha = painted.getchannel("A") if "A" in painted.getbands() else painted.convert("L")
        if alpha.size != rgba.size:
            alpha = alpha.resize(rgba.size, Image.Resampling.LANCZOS)
        rgba.putalpha(alpha)
        buffer = io.BytesIO()
        rgba.save(buffer, format="PNG")
    return buffer.getvalue()
