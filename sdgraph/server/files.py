"""GET /view and POST /upload/{image,mask}: files in output/, input/ and temp/, and never a step outside them.

Every client path goes through `safe_join`, and every route through `client_paths`, so a filesystem error on a
client's path (a name too long, a symlink loop, a full disk) is a 4xx or 507, never a 500. Uploads never
overwrite unless asked: identical content keeps the existing name, a clash with other content gets
`name (1).ext`, and the final name is claimed with a hard link, so a race cannot clobber a file either. Only media and plain data are served inline; anything else (HTML, SVG,
scripts) is an attachment.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from sdgraph.paths import safe_join
from sdgraph.server import images
from sdgraph.server.errors import ApiError
from sdgraph.server.fserrors import client_paths
from sdgraph.server.state import state_of

TYPES = ("output", "input", "temp")
INLINE = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
          ".gif": "image/gif", ".bmp": "image/bmp", ".mp4": "video/mp4", ".webm": "video/webm",
          ".mp3": "audio/mpeg", ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg",
          ".json": "application/json", ".txt": "text/plain; charset=utf-8"}
ANNOTATION = re.compile(r"^(.*) \[(output|input|temp)\]$")
MAX_PARTS = 16
MAX_FIELD = 64 * 1024
MAX_NAME = 200
CHUNK = 1 << 16


# ---- view -------------------------------------------------------------------------------------------------


def _type(value: str | None) -> str:
    kind = value or "output"
    if kind not in TYPES:
        raise ApiError(400, "invalid_type", f"type must be one of {', '.join(TYPES)}, got {kind[:40]!r}")
    return kind


async def view(request: web.Request) -> web.StreamResponse:
    dirs = state_of(request).dirs
    query = request.query
    filename = query.get("filename", "")
    kind = query.get("type")
    match = ANNOTATION.match(filename)
    if match:
        filename, kind = match.group(1), kind or match.group(2)
    if not filename:
        raise ApiError(400, "invalid_query", "filename is required")
    kind = _type(kind)
    channel = query.get("channel", "rgba").lower()
    if channel not in ("rgba", "rgb", "a"):
        raise ApiError(400, "invalid_query", "channel must be rgba, rgb or a")
    path = safe_join(dirs.of_type(kind), query.get("subfolder", ""), filename)
    if not path.is_file():
        raise ApiError(404, "not_found", f"no file {filename!r} in {kind}")
    preview = query.get("preview")
    if preview or channel != "rgba":
        body, content_type = await asyncio.to_thread(images.render, path, channel, preview)
        return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
    return web.FileResponse(path, headers=_file_headers(path))


def _file_headers(path: Path) -> dict[str, str]:
    content_type = INLINE.get(path.suffix.lower())
    if content_type is not None:
        return {"Content-Type": content_type, "Content-Disposition": f"inline; filename*=UTF-8''{_quote(path.name)}"}
    return {"Content-Type": "application/octet-stream",
            "Content-Disposition": f"attachment; filename*=UTF-8''{_quote(path.name)}",
            "Content-Security-Policy": "sandbox"}


def _quote(name: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415

    return quote(name, safe="")


# ---- upload -----------------------------------------------------------------------------------------------


@dataclass
class Spooled:
    filename: str
    file: IO[bytes]
    size: int
    digest: str


def check_filename(name: str | None) -> str:
    if not name:
        raise ApiError(400, "invalid_filename", "the image part needs a filename")
    bad = any(ch in name for ch in "/\\\x00") or any(ord(ch) < 32 or ord(ch) == 127 for ch in name)
    if bad or name.startswith(".") or len(name.encode("utf-8", "replace")) > MAX_NAME:
        raise ApiError(400, "invalid_filename",
                       f"filename {name[:60]!r} must be a plain name: no '/', '\\', NUL, control characters or "
                       f"leading '.', at most {MAX_NAME} bytes")
    return name


async def _spool(part: BodyPartReader, limit: int) -> Spooled:
    name = check_filename(part.filename)
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    digest = hashlib.sha256()
    size = 0
    while chunk := await part.read_chunk(CHUNK):
        size += len(chunk)
        if size > limit:
            spool.close()
            raise ApiError(413, "upload_too_large", f"upload over the limit of {limit // (1 << 20)} MB")
        digest.update(chunk)
        spool.write(chunk)
    return Spooled(name, spool, size, digest.hexdigest())


async def _field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(CHUNK):
        data += chunk
        if len(data) > MAX_FIELD:
            raise ApiError(413, "field_too_large", f"form field {part.name!r} is over {MAX_FIELD} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_field", f"form field {part.name!r} is not UTF-8") from None


async def _read_form(request: web.Request, limit: int) -> tuple[Spooled | None, dict[str, str]]:
    if request.content_type != "multipart/form-data":
        raise ApiError(400, "invalid_upload", "uploads are multipart/form-data with an 'image' file part")
    upload: Spooled | None = None
    fields: dict[str, str] = {}
    try:
        reader = await request.multipart()
        for _ in range(MAX_PARTS + 1):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "invalid_upload", "nested multipart bodies are not accepted")
            if part.name == "image" and part.filename is not None:
                if upload is not None:
                    raise ApiError(400, "invalid_upload", "one 'image' file per request")
                upload = await _spool(part, limit)
            else:
                fields[part.name or ""] = await _field(part)
        else:
            raise ApiError(400, "invalid_upload", f"more than {MAX_PARTS} form parts")
    except (ValueError, AssertionError, RuntimeError, LookupError, UnicodeError, TypeError,
            HttpProcessingError) as exc:
        if upload is not None:
            upload.file.close()
        raise ApiError(400, "invalid_upload", f"malformed multipart body: {exc}") from None
    except BaseException:
        if upload is not None:
            upload.file.close()
        raise
    return upload, fields


def _same_content(path: Path, upload: Spooled) -> bool:
    if path.stat().st_size != upload.size:
        return False
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest() == upload.digest


def _write_temp(directory: Path, upload: Spooled) -> Path:
    temp = directory / f".upload-{secrets.token_hex(8)}.part"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            upload.file.seek(0)
            while chunk := upload.file.read(1 << 20):
                out.write(chunk)
    except BaseException:
        temp.unlink(missing_ok=True)  # a full disk must not keep the part it could write
        raise
    return temp


def store_upload(root: Path, subfolder: str, upload: Spooled, overwrite: bool) -> str:
    """Write the upload under root/subfolder and return the name it got. Blocking."""
    directory = safe_join(root, subfolder)
    directory.mkdir(parents=True, exist_ok=True)
    directory = safe_join(root, subfolder)  # again: nothing created above may lead out
    stem, ext = os.path.splitext(upload.filename)
    temp = _write_temp(directory, upload)
    try:
        if overwrite:
            os.replace(temp, safe_join(directory, upload.filename))
            return upload.filename
        for i in range(10000):
            name = upload.filename if i == 0 else f"{stem} ({i}){ext}"
            target = directory / name
            if os.path.lexists(target):
                if target.is_file() and not target.is_symlink() and _same_content(target, upload):
                    return name
                continue
            try:
                os.link(temp, target)
            except FileExistsError:
                continue
            return name
        raise ApiError(409, "name_clash", f"no free name for {upload.filename!r}")
    finally:
        temp.unlink(missing_ok=True)


def _flag(value: str | None) -> bool:
    text = (value or "").strip().lower()
    if text not in ("", "1", "true", "0", "false"):
        raise ApiError(400, "invalid_field", f"overwrite must be true, false, 1 or 0, got {text[:20]!r}")
    return text in ("1", "true")


async def _upload(request: web.Request, mask: bool) -> web.Response:
    state = state_of(request)
    upload, fields = await _read_form(request, state.config.max_upload_bytes)
    if upload is None:
        raise ApiError(400, "invalid_upload", "no 'image' file part with a filename")
    try:
        kind = _type(fields.get("type") or "input")
        subfolder = fields.get("subfolder", "")
        root = state.dirs.of_type(kind)
        safe_join(root, subfolder)
        if mask:
            upload = await _masked(state.dirs, fields.get("original_ref"), upload)
        else:
            await asyncio.to_thread(images.check_upload, upload.file)
        overwrite = _flag(fields.get("overwrite")) and kind != "output"  # outputs are never overwritten
        name = await asyncio.to_thread(store_upload, root, subfolder, upload, overwrite)
    finally:
        upload.file.close()
    return web.json_response({"name": name, "subfolder": subfolder, "type": kind})


async def _masked(dirs: Any, original_ref: str | None, upload: Spooled) -> Spooled:
    import json  # noqa: PLC0415

    try:
        ref = json.loads(original_ref or "")
    except ValueError:
        raise ApiError(400, "invalid_upload", "a mask upload needs original_ref: JSON with the original's "
                                              "filename, subfolder and type") from None
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise ApiError(400, "invalid_upload", "original_ref must be an object with a filename")
    kind = _type(ref.get("type") or "input")
    subfolder = ref.get("subfolder") or ""
    if not isinstance(subfolder, str):
        raise ApiError(400, "invalid_upload", "original_ref.subfolder must be a string")
    original = safe_join(dirs.of_type(kind), subfolder, ref["filename"])
    if not original.is_file():
        raise ApiError(404, "not_found", f"original image {ref['filename']!r} not found in {kind}")
    data = await asyncio.to_thread(images.apply_mask, original, upload.file)
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    spool.write(data)
    upload.file.close()
    return Spooled(upload.filename, spool, len(data), hashlib.sha256(data).hexdigest())


async def upload_image(request: web.Request) -> web.Response:
    return await _upload(request, mask=False)


async def upload_mask(request: web.Request) -> web.Response:
    return await _upload(request, mask=True)


ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/view", client_paths(view)),
    ("POST", "/upload/image", client_paths(upload_image)),
    ("POST", "/upload/mask", client_paths(upload_mask)),
]
