"""`comfy.diffusers_load` for plugins: a diffusers-format folder as (MODEL, CLIP, VAE), through sdgraph's loader."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import comfy.sd


def load_diffusers(model_path: str, output_vae: bool = True, output_clip: bool = True,
                   embedding_directory: Any = None, **_: Any) -> tuple[Any, Any, Any]:
    """The folder's (MODEL, CLIP, VAE), parts not asked for None; precision follows sdgraph's model manager
    (an `fp16=` argument of older callers is ignored for that reason)."""
    if not (Path(model_path) / "model_index.json").is_file():
        raise ValueError(f"comfy.diffusers_load.load_diffusers: {model_path} is not a diffusers folder "
                         "(no model_index.json)")
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(model_path, output_vae, output_clip,
                                                                embedding_directory=embedding_directory)
    return model, clip, vae
