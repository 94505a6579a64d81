"""Workflows inside pictures: the `prompt` and `workflow` texts that ComfyUI and sdgraph embed in PNG and WebP.

The carriers, as ComfyUI writes them (and its frontend reads them):

- PNG: one text chunk per item, keyword `prompt` (the API prompt as JSON) and `workflow` (the editor layout as
  JSON), and one more per further key of `extra_pnginfo`. Written as tEXt; readers also accept iTXt and zTXt.
- Animated PNG (SaveAnimatedPNG): the same items in private `comf` chunks after the image data, each
  `<key>\\0<json>` as in tEXt (ComfyUI's frontend reads them like tEXt).
- WebP: an EXIF chunk holding one TIFF directory (IFD0) of ASCII entries whose values are `"<key>:<json>"`.
  The prompt goes in tag 0x0110 (Model), the first `extra_pnginfo` key (the workflow) in 0x010F (Make), a further
  key in 0x010E, and so on downwards. Readers split each value at its first colon; the EXIF payload may or may not
  start with `Exif\\0\\0`.

Reading is pure Python (no Pillow, no torch): a picture is parsed chunk by chunk, pixels are never decoded.
Writing returns Pillow's own metadata objects, so Pillow is imported only there.
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXIF_PROMPT_TAG = 0x0110  # Model
EXIF_FIRST_EXTRA_TAG = 0x010F  # Make; further extra_pnginfo keys count down from here
EXIF_ASCII = 2
MAX_TEXT_BYTES = 256 << 20  # a compressed text chunk is inflated up to this size, no further


class PictureError(ValueError):
    """The bytes are not a PNG or WebP picture, or its structure is broken where the metadata lives."""


def read_picture_chunks(source: str | Path | bytes) -> dict[str, str]:
    """The text items a PNG or WebP picture carries, by key: `prompt` and `workflow` when ComfyUI or sdgraph
    saved it (as JSON texts, not parsed), and any other text chunk or `key:value` EXIF entry it holds.

    `source` is a path or the file's bytes. A picture without metadata gives {}; bytes that are neither PNG nor
    WebP raise PictureError (a ValueError).
    """
    data = source if isinstance(source, bytes | bytearray | memoryview) else Path(source).read_bytes()
    data = bytes(data)
    if data.startswith(PNG_SIGNATURE):
        return _png_texts(data)
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_texts(data)
    raise PictureError("not a PNG or WebP picture")


def _png_texts(data: bytes) -> dict[str, str]:
    texts: dict[str, str] = {}
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if len(body) < length:
            break  # truncated file: keep what was read
        if kind in (b"tEXt", b"iTXt", b"zTXt", b"comf"):
            item = _png_text_chunk(kind, body)
            if item is not None:
                texts[item[0]] = item[1]
        elif kind == b"IEND":
            break
        offset += 12 + length  # length, type, body, CRC
    return texts


def _png_text_chunk(kind: bytes, body: bytes) -> tuple[str, str] | None:
    keyword, sep, rest = body.partition(b"\0")
    if not sep:
        return None
    key = keyword.decode("latin-1")
    if kind in (b"tEXt", b"comf"):
        # tEXt is Latin-1 by the PNG specification, but JSON written by ComfyUI is ASCII, and some writers put
        # UTF-8 there: take UTF-8 when it decodes, as ComfyUI's frontend does.
        return key, _decode_utf8_or_latin1(rest)
    if kind == b"zTXt":
        return key, _decode_utf8_or_latin1(_inflate(rest[1:]))
    if len(rest) < 2:
        return None
    compressed, text = rest[0], rest[2:]
    _language, _, text = text.partition(b"\0")
    _translated, _, text = text.partition(b"\0")
    if compressed:
        text = _inflate(text)
    return key, text.decode("utf-8", errors="replace")


def _inflate(blob: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(blob, MAX_TEXT_BYTES)
    except zlib.error as exc:
        raise PictureError(f"a compressed text chunk does not inflate: {exc}") from exc
    if inflater.unconsumed_tail:
        raise PictureError(f"a compressed text chunk inflates past {MAX_TEXT_BYTES} bytes")
    return out


def _decode_utf8_or_latin1(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _webp_texts(data: bytes) -> dict[str, str]:
    texts: dict[str, str] = {}
    end = min(len(data), 8 + struct.unpack("<I", data[4:8])[0])
    offset = 12
    while offset + 8 <= end:
        kind, length = struct.unpack("<4sI", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        if kind == b"EXIF":
            texts.update(_exif_texts(body))
        offset += 8 + length + (length & 1)  # RIFF chunks are padded to an even size
    return texts


def _exif_texts(exif: bytes) -> dict[str, str]:
    """`key:value` ASCII entries of the first IFD, split at the first colon (entries without one are left out)."""
    if exif.startswith(b"Exif\0\0"):
        exif = exif[6:]
    if len(exif) < 8 or exif[:2] not in (b"II", b"MM"):
        return {}
    order = "<" if exif[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", exif[4:8])[0]
    if ifd + 2 > len(exif):
        return {}
    count = struct.unpack(order + "H", exif[ifd:ifd + 2])[0]
    texts: dict[str, str] = {}
    for index in range(count):
        entry = exif[ifd + 2 + 12 * index:ifd + 14 + 12 * index]
        if len(entry) < 12:
            break
        _tag, kind, n = struct.unpack(order + "HHI", entry[:8])
        if kind != EXIF_ASCII or n == 0:
            continue
        if n <= 4:
            raw = entry[8:8 + n]
        else:
            start = struct.unpack(order + "I", entry[8:12])[0]
            raw = exif[start:start + n]
        value = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        key, sep, text = value.partition(":")
        if sep and key:
            texts[key] = text
    return texts


def comfy_metadata(prompt: dict[str, Any] | None, extra_pnginfo: dict[str, Any] | None, fmt: str) -> Any:
    """What SaveImage-style nodes attach to a picture from their hidden `prompt` and `extra_pnginfo` inputs,
    exactly as ComfyUI does: for "png" a PngInfo (text chunk `prompt`, then one per extra key, JSON each);
    for "apng" a PngInfo of the same items as `comf` chunks after the image data (ComfyUI's animated PNGs);
    for "webp" an Image.Exif (tag 0x0110 `prompt:<json>`, then 0x010F, 0x010E, ... `<key>:<json>`)."""
    fmt = fmt.lower()
    items = ([("prompt", prompt)] if prompt is not None else []) + list((extra_pnginfo or {}).items())
    if fmt == "png":
        from PIL.PngImagePlugin import PngInfo  # noqa: PLC0415

        info = PngInfo()
        for key, value in items:
            info.add_text(key, json.dumps(value))
        return info
    if fmt == "apng":
        from PIL.PngImagePlugin import PngInfo  # noqa: PLC0415

        info = PngInfo()
        for key, value in items:  # JSON is ASCII: only an odd key can need the replacement
            info.add(b"comf", key.encode("latin-1", "replace") + b"\0" + json.dumps(value).encode("latin-1"),
                     after_idat=True)
        return info
    if fmt == "webp":
        from PIL import Image  # noqa: PLC0415

        exif = Image.Exif()
        if prompt is not None:
            exif[EXIF_PROMPT_TAG] = "prompt:" + json.dumps(prompt)
        for tag, (key, value) in zip(range(EXIF_FIRST_EXTRA_TAG, 0, -1), (extra_pnginfo or {}).items()):
            exif[tag] = f"{key}:{json.dumps(value)}"
        return exif
    raise ValueError(f"pictures carry metadata as png, apng or webp, not {fmt!r}")


def picture_metadata(prompt: dict[str, Any] | None, workflow: dict[str, Any] | None, fmt: str) -> Any:
    """The metadata of a picture carrying an API prompt and a UI workflow (either may be None), in ComfyUI's
    form for `fmt` ("png": a PngInfo to pass as `pnginfo=`; "webp": an Image.Exif to pass as `exif=`)."""
    return comfy_metadata(prompt, {"workflow": workflow} if workflow is not None else None, fmt)
