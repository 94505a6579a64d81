"""Packs' browser extensions and load problems: GET /extensions and /node_problems.

A pack's WEB_DIRECTORY is served under /extensions/<pack>/ (static.py: code, like the editor's own files), as
ComfyUI serves it, and GET /extensions lists the JavaScript files in all of them for the editor to import. /object_info keeps ComfyUI's shape (every key a node class), so
the packs and nodes that failed to load are listed apart, at /node_problems.
"""
from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path
from typing import Any

from aiohttp import web

from sdgraph.server.state import state_of

MAX_LISTED = 5000  # JS files listed over all packs: a pack that points WEB_DIRECTORY at a huge tree stays cheap


def list_extensions(web_dirs: dict[str, Path]) -> list[str]:
    found: list[str] = []
    for name, root in sorted(web_dirs.items()):
        for path in sorted(root.rglob("*.js")):
            if len(found) >= MAX_LISTED:
                return found
            inside = path.resolve().is_relative_to(root.resolve())  # a link out of the folder is not served
            if inside and path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
                rel = path.relative_to(root).as_posix()
                found.append(f"/extensions/{urllib.parse.quote(name)}/{urllib.parse.quote(rel)}")
    return found


async def get_extensions(request: web.Request) -> web.Response:
    web_dirs = state_of(request).registry.web_dirs
    return web.json_response(await asyncio.to_thread(list_extensions, web_dirs))


def problems(registry: Any) -> list[dict[str, Any]]:
    return [problem.as_dict() for problem in registry.problems]


async def get_node_problems(request: web.Request) -> web.Response:
    return web.json_response({"problems": problems(state_of(request).registry)})


ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/extensions", get_extensions),
    ("GET", "/node_problems", get_node_problems),
]
