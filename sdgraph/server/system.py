"""Node descriptions, system and device stats, model lists, and memory requests."""
from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from sdgraph.paths import MODEL_EXTENSIONS, Dirs
from sdgraph.server.backend import describe_workers
from sdgraph.server.errors import ApiError, read_model
from sdgraph.server.schemas import FreeRequest
from sdgraph.server.state import state_of

MODEL_FOLDERS = ("checkpoints", "clip", "clip_vision", "configs", "controlnet", "diffusion_models", "embeddings",
                 "loras", "unet", "upscale_models", "vae", "vae_approx")
FOLDER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
SECRET_FLAGS = ("--token",)


async def object_info(request: web.Request) -> web.Response:
    state = state_of(request)
    return web.json_response(await asyncio.to_thread(state.registry.describe, state.dirs))


async def object_info_one(request: web.Request) -> web.Response:
    state = state_of(request)
    name = request.match_info["node_class"]
    node = state.registry.get(name)
    if node is None:
        return web.json_response({})
    info = await asyncio.to_thread(node.spec.describe, state.dirs)
    if name != node.class_type:
        info = {**info, "name": name}
    return web.json_response({name: info})


# ---- system stats -------------------------------------------------------------------------------------------


def _memory() -> tuple[int, int]:
    """(total, available) RAM in bytes."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        return int(fields["MemTotal"].split()[0]) * 1024, int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
        except (ValueError, OSError, AttributeError):
            return 0, 0


def _torch(probe: bool) -> Any:
    """torch if it is already loaded, or (when allowed) importable; None otherwise. Call off the event loop."""
    if "torch" in sys.modules:
        return sys.modules["torch"]
    if not probe or importlib.util.find_spec("torch") is None:
        return None
    try:
        return importlib.import_module("torch")
    except Exception:  # noqa: BLE001 - a broken torch install must not break /system_stats
        return None


def _devices(probe: bool) -> tuple[list[dict[str, Any]], str | None]:
    torch = _torch(probe)
    devices: list[dict[str, Any]] = []
    if torch is not None:
        try:
            if torch.cuda.is_available():
                for index in range(torch.cuda.device_count()):
                    free, total = torch.cuda.mem_get_info(index)
                    reserved = torch.cuda.memory_reserved(index)
                    allocated = torch.cuda.memory_allocated(index)
                    devices.append({"name": f"cuda:{index} {torch.cuda.get_device_name(index)}", "type": "cuda",
                                    "index": index, "vram_total": total, "vram_free": free,
                                    "torch_vram_total": reserved, "torch_vram_free": reserved - allocated})
        except Exception:  # noqa: BLE001 - report what we can
            devices = []
    if not devices:
        total, free = _memory()
        devices.append({"name": "cpu", "type": "cpu", "index": None, "vram_total": total, "vram_free": free,
                        "torch_vram_total": total, "torch_vram_free": free})
    return devices, getattr(torch, "__version__", None)


def masked_argv(argv: list[str], secrets: list[str]) -> list[str]:
    """argv with every secret's value masked wherever it appears (`--token X`, `--token=X`, `--tok=X`, ...),
    and the argument after a secret flag masked too (a secret not known here, such as an unused token)."""
    out, hide = [], False
    for arg in argv:
        if hide:
            arg, hide = "***", False
        elif arg in SECRET_FLAGS:
            hide = True
        elif arg.startswith(tuple(f"{flag}=" for flag in SECRET_FLAGS)):
            arg = arg.split("=", 1)[0] + "=***"
        for secret in secrets:
            arg = arg.replace(secret, "***")
        out.append(arg)
    return out


def _version() -> str:
    try:
        from importlib.metadata import version  # noqa: PLC0415

        return version("sdgraph")
    except Exception:  # noqa: BLE001
        return "unknown"


async def system_stats(request: web.Request) -> web.Response:
    state = state_of(request)
    devices, torch_version = await asyncio.to_thread(_devices, state.config.probe_torch)
    total, free = _memory()
    version = _version()
    return web.json_response({
        "system": {
            "os": os.name if sys.platform == "win32" else sys.platform, "platform": platform.platform(),
            "ram_total": total, "ram_free": free, "sdgraph_version": version, "comfyui_version": version,
            "python_version": sys.version, "pytorch_version": torch_version, "embedded_python": False,
            "argv": masked_argv(sys.argv, [state.config.token] if state.config.token else []),
        },
        "devices": devices,
        "workers": describe_workers(state.worker),  # sdgraph's: every worker of the backend, with its models
    })


# ---- models -------------------------------------------------------------------------------------------------


def model_folders(dirs: Dirs) -> list[str]:
    names = set(MODEL_FOLDERS)
    for root in (dirs.models, *dirs.extra_model_roots):
        if root.is_dir():
            names.update(p.name for p in root.iterdir() if p.is_dir() and FOLDER_NAME.match(p.name))
    return sorted(names)


def _folder(request: web.Request) -> str:
    folder = request.match_info["folder"]
    if not FOLDER_NAME.match(folder) or folder in (".", ".."):
        raise ApiError(400, "invalid_folder", "a model folder is a plain name such as 'checkpoints'")
    return folder


async def get_models(request: web.Request) -> web.Response:
    return web.json_response(await asyncio.to_thread(model_folders, state_of(request).dirs))


async def get_models_in(request: web.Request) -> web.Response:
    dirs = state_of(request).dirs
    folder = _folder(request)
    if folder not in await asyncio.to_thread(model_folders, dirs):
        raise ApiError(404, "unknown_folder", f"no model folder {folder!r}")
    return web.json_response(await asyncio.to_thread(dirs.list_models, folder))


async def get_embeddings(request: web.Request) -> web.Response:
    names = await asyncio.to_thread(state_of(request).dirs.list_models, "embeddings")
    stripped = [name[: -len(ext)] for name in names for ext in MODEL_EXTENSIONS if name.endswith(ext)]
    return web.json_response(sorted(set(stripped) | {n for n in names if not n.endswith(MODEL_EXTENSIONS)}))


async def post_free(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_model(request, FreeRequest, state.config.max_body_bytes, allow_empty=True)
    state.worker.request_free(body.unload_models, body.free_memory)
    return web.json_response({"unload_models": body.unload_models, "free_memory": body.free_memory})


async def features(request: web.Request) -> web.Response:
    config = state_of(request).config
    return web.json_response({"supports_preview_metadata": False, "max_upload_size": config.max_upload_bytes})


ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/object_info", object_info),
    ("GET", "/object_info/{node_class}", object_info_one),
    ("GET", "/system_stats", system_stats),
    ("GET", "/models", get_models),
    ("GET", "/models/{folder}", get_models_in),
    ("GET", "/embeddings", get_embeddings),
    ("POST", "/free", post_free),
    ("GET", "/features", features),
]
