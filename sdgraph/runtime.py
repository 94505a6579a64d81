"""Assemble an executor the way every face (CLI, server, tests) needs one: directories, packs, cache, models."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from sdgraph.cache import DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, OutputCache
from sdgraph.cobatch import DEFAULT_MAX_PROMPTS, DEFAULT_WAIT_S
from sdgraph.context import Services
from sdgraph.disk_cache import DEFAULT_MAX_BYTES as DISK_MAX_BYTES
from sdgraph.disk_cache import DEFAULT_MIN_SECONDS, DiskCache
from sdgraph.execute import Executor
from sdgraph.fast_path import FastPath
from sdgraph.limits import Limits, configure
from sdgraph.paths import Dirs, default_base
from sdgraph.plugins import build_registry


class RuntimeOptions(BaseModel):
    """Settings shared by the faces; each maps to a command-line flag."""

    base_dir: Path | None = None
    plugins: bool = True
    cache_entries: int = DEFAULT_MAX_ENTRIES
    cache_bytes: int = DEFAULT_MAX_BYTES
    no_cache: bool = False
    cache_lru: int = 0  # outputs of earlier runs kept besides each node's latest (ComfyUI's --cache-lru)
    sequential: bool = False  # every node in the executor's thread, one at a time (no overlap across resources)
    batch_max: int = Field(DEFAULT_MAX_PROMPTS, ge=1)  # queued prompts run as one group (sdgraph.cobatch); 1: off
    batch_wait: float = Field(DEFAULT_WAIT_S, ge=0)  # seconds a group's sampler waits for the others
    disk_cache: bool = True  # outputs kept on disk across processes (off with --no-disk-cache or --no-cache)
    disk_cache_dir: Path | None = None  # default: <base>/cache/outputs
    disk_cache_bytes: int = Field(DISK_MAX_BYTES, ge=0)
    disk_cache_min_seconds: float = Field(DEFAULT_MIN_SECONDS, ge=0)
    cpu: bool = False
    lowvram: bool = False
    fast_path: FastPath = Field(default_factory=FastPath)  # --compile, --channels-last
    reserve_vram_gb: float = 1.0
    ram_budget_gb: float | None = Field(None, ge=0)  # CPU memory for loaded models; None: half of what is free
    preview: bool = False
    limits: Limits = Field(default_factory=Limits)  # resource budgets (sdgraph.limits.limits_from_args)


def create_executor(options: RuntimeOptions | None = None) -> Executor:
    options = options or RuntimeOptions()
    dirs = Dirs(base=(options.base_dir or default_base()).resolve())
    registry = build_registry(dirs.custom_nodes, plugins=options.plugins, dirs=dirs)
    cache = OutputCache(0 if options.no_cache else options.cache_entries, options.cache_bytes, options.cache_lru)
    configure(options.limits)  # validate_inputs only sees the directories; it reads the budget from here
    services = Services(dirs=dirs, models=_model_manager(options), settings={"preview": options.preview},
                        limits=options.limits)
    return Executor(registry, services, cache, _disk_cache(options, dirs), parallel=not options.sequential,
                    batch_max=options.batch_max, batch_wait=options.batch_wait)


def _disk_cache(options: RuntimeOptions, dirs: Dirs) -> DiskCache | None:
    if options.no_cache or not options.disk_cache or options.disk_cache_bytes == 0:
        return None
    directory = options.disk_cache_dir or dirs.base / "cache" / "outputs"
    return DiskCache(directory, options.disk_cache_bytes, options.disk_cache_min_seconds)


def _model_manager(options: RuntimeOptions) -> Any:
    """The model manager lives where torch lives; import it only when a face asks for an executor."""
    try:
        models = importlib.import_module("sdgraph.models")
    except ImportError:
        return None
    ram = None if options.ram_budget_gb is None else int(options.ram_budget_gb * 1024**3)
    return models.ModelManager(force_cpu=options.cpu, lowvram=options.lowvram,
                               reserve_bytes=int(options.reserve_vram_gb * 1024**3), ram_budget_bytes=ram,
                               fast_path=options.fast_path)
