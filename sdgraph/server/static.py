"""GET / and the editor's static files from `web/` (a small page of links stands in until the editor exists)."""
from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from aiohttp import web

from sdgraph.paths import UnsafePath, safe_join
from sdgraph.server.errors import ApiError
from sdgraph.server.fserrors import client_paths
from sdgraph.server.state import state_of

TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html",
         ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
         ".woff2": "font/woff2", ".map": "application/json", ".txt": "text/plain", ".webp": "image/webp"}
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
       "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'self'")

PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sdgraph</title></head>
<body style="font-family: sans-serif; max-width: 40em; margin: 3em auto">
<h1>sdgraph server</h1>
<p>The browser editor is not installed (no <code>web/index.html</code>). The API is running:</p>
<ul><li><a href="/openapi.json">/openapi.json</a></li><li><a href="/object_info">/object_info</a></li>
<li><a href="/queue">/queue</a></li><li><a href="/history?max_items=20">/history</a></li>
<li><a href="/system_stats">/system_stats</a></li></ul>
</body></html>
"""


async def index(request: web.Request) -> web.StreamResponse:
    page = state_of(request).web_dir / "index.html"
    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
    if page.is_file():
        return web.FileResponse(page, headers={**headers, "Content-Type": "text/html; charset=utf-8"})
    return web.Response(text=PLACEHOLDER, content_type="text/html", headers=headers)


async def asset(request: web.Request) -> web.StreamResponse:
    web_dir = state_of(request).web_dir
    rel = request.match_info["path"]
    try:
        path = safe_join(web_dir, rel)
    except UnsafePath:
        raise ApiError(404, "not_found", "no such file") from None
    if not path.is_file():
        raise ApiError(404, "not_found", f"no route or file {request.path!r}")
    return file_response(path)


async def extension_file(request: web.Request) -> web.StreamResponse:
    """A file of a pack's WEB_DIRECTORY, served as ComfyUI serves it: /extensions/<pack>/<path>. Without the
    access token, as the editor's files: a browser resolves an extension's relative imports without it."""
    root = state_of(request).registry.web_dirs.get(request.match_info["pack"])
    if root is None:
        raise ApiError(404, "not_found", "no pack serves browser extensions under that name")
    try:
        path = safe_join(root, request.match_info["path"])
    except UnsafePath:
        raise ApiError(404, "not_found", "no such file") from None
    if not path.is_file():
        raise ApiError(404, "not_found", "no such file")
    return file_response(path)


def file_response(path: Path) -> web.FileResponse:
    content_type = TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") and "charset" not in content_type:
        content_type += "; charset=utf-8"
    return web.FileResponse(path, headers={"Content-Type": content_type, "Content-Security-Policy": CSP,
                                           "Cache-Control": "no-cache"})


ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/", index),
    ("GET", "/extensions/{pack}/{path:.+}", client_paths(extension_file)),
    # Only names with an extension: an API path (/free, /queue) never falls through to the editor's files.
    ("GET", r"/{path:.+\.[A-Za-z0-9]+}", client_paths(asset)),
]
