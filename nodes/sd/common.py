"""Small helpers the SD node modules share: the model manager of a run, and model file resolution."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sdgraph.context import NodeContext
from sdgraph.models import ModelManager

# The largest width/height (and offset) a size input offers, as in ComfyUI; what a run may really allocate is
# bounded separately by the limits (sdgraph/limits.py).
MAX_RESOLUTION = 16384

_lock = threading.Lock()


def manager_of(ctx: NodeContext) -> ModelManager:
    """The services' model manager; one is created (default device and budget) the first time none is set."""
    with _lock:
        if ctx.services.models is None:
            ctx.services.models = ModelManager()
        return ctx.services.models


def model_path(ctx: NodeContext, folder: str, name: str) -> Path:
    return ctx.dirs.find_model(folder, name)


def copy_conditioning(conditioning: list[Any], **extras: Any) -> list[list[Any]]:
    """A new CONDITIONING list with each entry's extras copied (tensors shared) and updated."""
    return [[cond, {**meta, **extras}] for cond, meta in conditioning]
