"""Load a text encoder given on its own (ComfyUI's models/text_encoders, models/clip) and make CLIP values of them.

Layouts read (one text encoder a file; its keys may sit under any prefix, e.g. a checkpoint's
`cond_stage_model.transformer.`):
- transformers' names: `text_model.embeddings.*`, `text_model.encoder.layers.*`, ... (+ `text_projection.weight`),
  as transformers, diffusers' `text_encoder/` folders and ComfyUI's CLIPSave write them; the same without
  `text_model.` (transformers >= 5.6); `text_projection` in OpenCLIP's orientation (older ComfyUI saves);
- OpenCLIP's names: `token_embedding.weight`, `positional_embedding`, `transformer.resblocks.*`, `ln_final.*`,
  `text_projection` (fused q/k/v).
A file holding a whole CLIP (text and vision towers) is read for its text tower.

Which encoder it is: the width of the released models decides (768 CLIP-L, 1024 OpenCLIP-H, 1280 OpenCLIP-G);
at any other width the layer count does, as ComfyUI decides: a 31st layer means CLIP-G, a 23rd OpenCLIP-H,
otherwise CLIP-L. Weights cannot tell the activation; each kind has its released model's (CLIP-L quick_gelu, the
OpenCLIP models gelu). Every stored layer is kept: a released-width file with fewer layers than its model has
(diffusers' SD 2.x text encoder lacks OpenCLIP-H's last) counts the missing ones, so `stop_at_clip_layer` still
counts in the original depth.

How an encoder is used depends on the recipe (`Recipe`): for CLIPLoader's "stable_diffusion", CLIP-L as SD 1.x
uses it, OpenCLIP-H as SD 2.x, OpenCLIP-G alone as the SDXL refiner; for DualCLIPLoader's "sdxl", CLIP-L and
OpenCLIP-G as SDXL base uses them (penultimate layer, no final norm, pooled from OpenCLIP-G).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdgraph.nodes.sd.checkpoint_layout import (
    UnsupportedCheckpoint, family_defaults, hf_clip_config, open_clip_config,
)
from sdgraph.nodes.sd.empty_init import assign_weights, empty_weights
from sdgraph.nodes.sd.loading import shipped_tokenizer
from sdgraph.nodes.sd.model_objects import ClipModel, EncoderSpec
from sdgraph.nodes.sd.text_precision import keep_half_values
from sdgraph.nodes.sd.weight_file import WeightFile, open_weights

RELEASED_WIDTH = {"clip_l": 768, "clip_h": 1024, "clip_g": 1280}
RELEASED_DEPTH = {"clip_l": 12, "clip_h": 24, "clip_g": 32}
KIND_NAMES = {"clip_l": "CLIP-L", "clip_h": "OpenCLIP-H", "clip_g": "OpenCLIP-G"}
# (family config, index of the encoder there) whose settings each kind takes in each recipe
RECIPES: dict[str, dict[str, tuple[str, int]]] = {
    "stable_diffusion": {"clip_l": ("sd1", 0), "clip_h": ("sd2", 0), "clip_g": ("sdxl_refiner", 0)},
    "sdxl": {"clip_l": ("sdxl", 0), "clip_g": ("sdxl", 1)},
}
HF_MARKER = "embeddings.token_embedding.weight"
OPEN_CLIP_MARKERS = ("token_embedding.weight", "positional_embedding")
EXPECTED = ("expected a CLIP text encoder: transformers names (text_model.embeddings.token_embedding.weight, "
            "text_model.encoder.layers.N.*) or OpenCLIP names (token_embedding.weight, positional_embedding, "
            "transformer.resblocks.N.*)")


@dataclass(frozen=True)
class TextEncoder:
    """A loaded text encoder file: its kind, depth and the managed module."""

    kind: str
    layers: int
    width: int
    slot: Any  # ManagedModule
    name: str

    @property
    def missing_layers(self) -> int:
        """Layers a released model has after the last one this file stores."""
        if self.width != RELEASED_WIDTH[self.kind]:
            return 0
        return max(0, RELEASED_DEPTH[self.kind] - self.layers)


def load_text_encoder(path: Path, manager: Any) -> TextEncoder:
    """The text encoder of one file, cached by the manager while the file is unchanged."""
    return manager.load(path, "text_encoder", lambda p: _load_uncached(p, manager))


def _load_uncached(path: Path, manager: Any) -> TextEncoder:
    from diffusers.loaders.single_file_utils import convert_open_clip_checkpoint

    sd = open_weights(path)
    layout, prefix = find_text_encoder(sd, path.name)
    width, layers = _size(sd, layout, prefix)
    kind = encoder_kind(width, layers)
    family, index = RECIPES["stable_diffusion"][kind]
    defaults = family_defaults(family)["text_encoders"][index]
    read = hf_clip_config if layout == "hf" else open_clip_config
    config = read(sd, prefix, defaults)
    weights_sd = sd.cast(manager.dtype_for_role("text_encoder"))
    if layout == "hf":
        weights = _hf_weights(weights_sd, prefix)
        if "text_projection.weight" in weights:
            config["projection_dim"] = int(weights["text_projection.weight"].shape[0])
    if kind == "clip_g" and (prefix + "text_projection" not in sd and prefix + "text_projection.weight" not in sd):
        raise UnsupportedCheckpoint(f"{path.name}: an OpenCLIP-G text encoder without its text_projection, which "
                                    "gives SDXL its pooled text embedding")
    with empty_weights():
        model = _text_model(config)
    if layout != "hf":
        weights = convert_open_clip_checkpoint(model, weights_sd, prefix=prefix)
    if not hasattr(model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        weights = {k.removeprefix("text_model."): v for k, v in weights.items()}
    assign_weights(model, weights, f"{path.name}: text encoder {KIND_NAMES[kind]}")
    slot = manager.manage(model, f"{path.name}:text_encoder", "text_encoder")
    keep_half_values(slot)
    return TextEncoder(kind=kind, layers=layers, width=width, slot=slot, name=path.name)


def find_text_encoder(sd: WeightFile, name: str) -> tuple[str, str]:
    """("hf" | "open_clip", the prefix before its names) of the one text encoder in the file."""
    found: set[tuple[str, str]] = set()
    for key in sd:
        if key.endswith(HF_MARKER):
            found.add(("hf", re.sub(r"text_model\.$", "", key[: -len(HF_MARKER)])))
        elif key.endswith(OPEN_CLIP_MARKERS[0]):
            prefix = key[: -len(OPEN_CLIP_MARKERS[0])]
            if prefix + OPEN_CLIP_MARKERS[1] in sd:
                found.add(("open_clip", prefix))
    if not found:
        sample = ", ".join(list(sd)[:3]) or "no tensors"
        raise UnsupportedCheckpoint(f"{name}: no text encoder keys (first keys: {sample}); {EXPECTED}")
    if len(found) > 1:
        where = ", ".join(sorted(repr(p) for _, p in found))
        raise UnsupportedCheckpoint(f"{name}: holds {len(found)} text encoders (under {where}), a whole "
                                    "checkpoint: load it with CheckpointLoaderSimple from models/checkpoints")
    return found.pop()


def _size(sd: WeightFile, layout: str, prefix: str) -> tuple[int, int]:
    if layout == "hf":
        inner = prefix + ("text_model." if prefix + "text_model." + HF_MARKER in sd else "")
        width = int(sd[inner + HF_MARKER].shape[1])
        pattern = re.escape(inner) + r"encoder\.layers\.(\d+)\."
    else:
        width = int(sd[prefix + OPEN_CLIP_MARKERS[0]].shape[1])
        pattern = re.escape(prefix) + r"transformer\.resblocks\.(\d+)\."
    layers = {m.group(1) for k in sd if (m := re.match(pattern, k))}
    return width, len(layers)


def encoder_kind(width: int, layers: int) -> str:
    """"clip_l", "clip_h" or "clip_g": by the released width, else by ComfyUI's layer-count rule."""
    for kind, released in RELEASED_WIDTH.items():
        if width == released:
            return kind
    return "clip_g" if layers > 30 else "clip_h" if layers > 22 else "clip_l"


def _hf_weights(sd: WeightFile, prefix: str) -> dict[str, torch.Tensor]:
    """transformers' CLIPTextModel names (`text_model.` + ..., `text_projection.weight`) of the encoder."""
    out: dict[str, torch.Tensor] = {}
    for key in sd:
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if rest.startswith("text_model."):
            out[rest] = sd[key]
        elif rest.startswith(("embeddings.", "encoder.", "final_layer_norm.")):
            out["text_model." + rest] = sd[key]
        elif rest == "text_projection.weight":
            out[rest] = sd[key]
        elif rest == "text_projection":  # OpenCLIP's orientation, as older ComfyUI saves wrote it
            out["text_projection.weight"] = sd[key].T.contiguous()
    return out


def _text_model(config: dict[str, Any]) -> torch.nn.Module:
    from transformers.models.clip.configuration_clip import CLIPTextConfig
    from transformers.models.clip.modeling_clip import CLIPTextModel, CLIPTextModelWithProjection

    params = {k: v for k, v in config.items() if k not in ("kind", "class")}
    cls = CLIPTextModelWithProjection if config.get("kind") == "clip_g" else CLIPTextModel
    return cls(CLIPTextConfig(**params))


# ---- CLIP values -----------------------------------------------------------------------------------------------


def clip_of(encoders: list[TextEncoder], recipe: str) -> ClipModel:
    """CLIP over loaded text encoders as `recipe` uses them (see RECIPES), encoders in the family's order."""
    table = RECIPES[recipe]
    family = table[encoders[0].kind][0]
    ordered = sorted(encoders, key=lambda e: table[e.kind][1])
    defaults = family_defaults(family)
    specs = []
    for encoder in ordered:
        index = table[encoder.kind][1]
        specs.append(EncoderSpec(kind=encoder.kind, default_skip=defaults["default_clip_skip"][index],
                                 final_norm=defaults["final_norm"][index], dropped_layers=encoder.missing_layers,
                                 pad_id=int(defaults["text_encoders"][index]["pad_token_id"])))
    tokenizer = shipped_tokenizer()
    return ClipModel(tokenizers=(tokenizer,) * len(ordered), encoders=tuple(e.slot for e in ordered),
                     specs=tuple(specs), name="+".join(e.name for e in encoders))
