"""`comfy.clip_vision` for plugins: CLIP vision loading and encoding through sdgraph's CLIP_VISION.

`load(path)` gives sdgraph's `ClipVision` (what CLIPVisionLoader gives; `ClipVisionModel` is that class) loaded
by the model manager of the node call in progress; `encode_image(image, crop=True)` gives an `Output`
(sdgraph's ClipVisionOutput: last_hidden_state, penultimate_hidden_states, image_embeds, readable as keys and
attributes). `clip_preprocess` is the resize, crop and normalisation the encoder applies.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from sdgraph.comfy_layer import binding
from sdgraph.nodes.sd.clip_vision import CLIP_MEAN, CLIP_STD, ClipVision, ClipVisionOutput, is_open_clip
from sdgraph.nodes.sd.clip_vision import load_clip_vision_file, load_clip_vision_weights, preprocess

ClipVisionModel = ClipVision
Output = ClipVisionOutput


def clip_preprocess(image: torch.Tensor, size: int = 224, mean: Sequence[float] = CLIP_MEAN,
                    std: Sequence[float] = CLIP_STD, crop: bool = True) -> torch.Tensor:
    """IMAGE [B, H, W, C] 0..1 -> normalised pixels [B, 3, size, size]: bicubic (antialiased) resize of the
    shorter side and centre crop (or a straight resize without crop), 8-bit quantisation, mean/std."""
    return preprocess(image, size, tuple(mean), tuple(std), crop).to(image.dtype)


def load(ckpt_path: str) -> ClipVision:
    """A CLIP vision file (Hugging Face or OpenCLIP `visual.*` names), cached while the file is unchanged."""
    return load_clip_vision_file(Path(ckpt_path), binding.model_manager())


def load_clipvision_from_sd(sd: dict[str, torch.Tensor], prefix: str = "", convert_keys: bool = False
                            ) -> ClipVision:
    """A CLIP vision model from the tensors under `prefix` (either key layout)."""
    if not prefix and is_open_clip(sd, "visual."):
        prefix = "visual."
    return load_clip_vision_weights(sd, prefix, "state dict", binding.model_manager())
