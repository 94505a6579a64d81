"""CLIP vision models (models/clip_vision, and the image encoder inside unCLIP / SVD checkpoints).

CLIP_VISION -> `ClipVision`: a transformers `CLIPVisionModelWithProjection` under the model manager (the text
encoders' precision; the embeddings' and layers' weights rounded to fp16 values, as ComfyUI stores them, while
its two outer norms and the projection stay float32, as ComfyUI builds them: see `text_precision`), with `encode_image(image, crop=True) -> ClipVisionOutput`.
CLIP_VISION_OUTPUT -> `ClipVisionOutput`: `last_hidden_state` [B, 1 + patches, width] (the last layer, before the
final norm), `penultimate_hidden_states` (the layer before it), `image_embeds` [B, projection] (the class token,
normed and projected); each readable as an attribute and as a key (`out["image_embeds"]`), as ComfyUI's is.

Key layouts read:
- Hugging Face names (`vision_model.*`, `visual_projection.weight`), as ComfyUI stores CLIP vision files;
- OpenCLIP names under a prefix (`visual.*` in a file, `embedder.model.visual.*` in an unCLIP checkpoint, ...):
  fused `attn.in_proj_*` split into q/k/v, `proj` transposed into the projection, the rest renamed.

The architecture is picked as ComfyUI picks it, by the depth the key names show: 48 layers ViT-bigG/14, 31 or more
ViT-H/14, 23 or more ViT-L/14 (`sdgraph/data/configs/clip_vision_vit_*.json`). What the family fixes and shapes do
not show (activation, heads, norm epsilon) comes from that config; the widths, depth, patch and image size are
read from the tensors, so they equal the config's for real files and scaled-down files load too.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from sdgraph.nodes.sd.text_precision import round_weights_to_half
from sdgraph.paths import PACKAGE_DATA

CONFIG_DIR = PACKAGE_DATA / "configs"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HF = "vision_model."
LAYER = re.compile(r"vision_model\.encoder\.layers\.(\d+)\.")
# (fewest layers, config): the deepest match wins, as ComfyUI tests layer 47, then 30, then 22
FAMILIES = ((48, "vit_g"), (31, "vit_h"), (23, "vit_l"))
OPEN_CLIP_RENAMES = {"class_embedding": "embeddings.class_embedding", "conv1.weight": "embeddings.patch_embedding.weight",
                     "positional_embedding": "embeddings.position_embedding.weight",
                     "ln_pre.weight": "pre_layrnorm.weight", "ln_pre.bias": "pre_layrnorm.bias",
                     "ln_post.weight": "post_layernorm.weight", "ln_post.bias": "post_layernorm.bias"}
BLOCK_RENAMES = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
                 "attn.out_proj": "self_attn.out_proj"}

StateDict = Mapping[str, torch.Tensor]


class NotClipVision(ValueError):
    """Weights that hold no CLIP vision model sdgraph can read."""


class ClipVisionOutput:
    """What CLIPVisionEncode gives: tensors readable as attributes and as keys (ComfyUI's Output object)."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and hasattr(self, key)

    def keys(self) -> list[str]:
        return list(vars(self))

    def cache_nbytes(self) -> int:
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, torch.Tensor))


@dataclass
class ClipVision:
    """CLIP_VISION: the vision tower and how it wants its images (size, normalisation)."""

    slot: Any  # ManagedModule of a CLIPVisionModelWithProjection
    image_size: int = 224
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    name: str = ""

    def cache_nbytes(self) -> int:
        return 0  # the module belongs to the model manager

    @torch.inference_mode()
    def encode_image(self, image: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
        """Encode IMAGE [B, H, W, C] 0..1: resized (and centre-cropped when `crop`), normalised, run."""
        manager = self.slot.manager
        model = manager.acquire(self.slot)
        device, dtype = manager.compute_device, manager.dtype_for(self.slot)
        pixels = preprocess(image.to(device), self.image_size, self.mean, self.std, crop)
        out = model(pixel_values=pixels.to(dtype), output_hidden_states=True)
        result = ClipVisionOutput()
        result["last_hidden_state"] = out.last_hidden_state.float().cpu()
        result["image_embeds"] = out.image_embeds.float().cpu()
        result["penultimate_hidden_states"] = out.hidden_states[-2].float().cpu()
        result["mm_projected"] = None  # ComfyUI's LLaVA projector output; no SD-family model has one
        return result


def preprocess(image: torch.Tensor, size: int, mean: tuple[float, ...], std: tuple[float, ...],
               crop: bool) -> torch.Tensor:
    """IMAGE [B, H, W, C] 0..1 -> normalised pixels [B, 3, size, size] (float32), as ComfyUI prepares them:
    antialiased bicubic resize (shorter side to `size` then centre crop, or straight to size x size), then
    quantised to 8-bit levels before the mean/std normalisation."""
    x = image[..., :3].float().movedim(-1, 1)
    height, width = x.shape[-2:]
    if (height, width) != (size, size):
        if crop:
            scale = size / min(height, width)
            target = (round(scale * height), round(scale * width))
        else:
            target = (size, size)
        x = F.interpolate(x, size=target, mode="bicubic", antialias=True)
        top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    x = torch.clip(x * 255.0, 0, 255).round() / 255.0
    mean_t = torch.tensor(mean, device=x.device).view(3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(3, 1, 1)
    return (x - mean_t) / std_t


# ---- key layouts --------------------------------------------------------------------------------------------


def is_open_clip(sd: StateDict, prefix: str) -> bool:
    return f"{prefix}transformer.resblocks.0.attn.in_proj_weight" in sd


def hf_weights(sd: StateDict, prefix: str = "") -> dict[str, torch.Tensor]:
    """The vision tower's tensors under Hugging Face names, from either layout under `prefix`."""
    if is_open_clip(sd, prefix):
        return _from_open_clip(sd, prefix)
    return {k[len(prefix):]: sd[k] for k in sd if k.startswith(prefix + HF) or k == prefix + "visual_projection.weight"}


def _from_open_clip(sd: StateDict, prefix: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    block = re.compile(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.(.+)[._](weight|bias)$")
    for key in sd:
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name in OPEN_CLIP_RENAMES:
            out[HF + OPEN_CLIP_RENAMES[name]] = sd[key]
        elif name == "proj":
            out["visual_projection.weight"] = sd[key].transpose(0, 1)
        elif m := block.match(key):
            index, part, kind = m.groups()
            layer = f"{HF}encoder.layers.{index}."
            if part == "attn.in_proj":
                for role, chunk in zip(("q_proj", "k_proj", "v_proj"), sd[key].chunk(3, dim=0)):
                    out[f"{layer}self_attn.{role}.{kind}"] = chunk
            elif part in BLOCK_RENAMES:
                out[f"{layer}{BLOCK_RENAMES[part]}.{kind}"] = sd[key]
    return out


def family_of(weights: StateDict) -> str | None:
    """"vit_g", "vit_h" or "vit_l" by the depth the names show (ComfyUI's test), None for none of them."""
    layers = {int(m.group(1)) for k in weights if (m := LAYER.match(k))}
    depth = max(layers) + 1 if layers else 0
    return next((name for least, name in FAMILIES if depth >= least), None)


def vision_config(weights: StateDict, family: str) -> dict[str, Any]:
    """The CLIPVisionConfig arguments: the family's config with the sizes the tensors show."""
    config = json.loads((CONFIG_DIR / f"clip_vision_{family}.json").read_text())
    patch = weights[HF + "embeddings.patch_embedding.weight"]
    positions = int(weights[HF + "embeddings.position_embedding.weight"].shape[0])
    grid = round((positions - 1) ** 0.5)
    if grid * grid != positions - 1:
        raise NotClipVision(f"{positions} position embeddings are not a square grid of patches plus the class token")
    layers = {int(m.group(1)) for k in weights if (m := LAYER.match(k))}
    config.update(hidden_size=int(patch.shape[0]), patch_size=int(patch.shape[-1]), num_channels=int(patch.shape[1]),
                  image_size=grid * int(patch.shape[-1]), num_hidden_layers=max(layers) + 1,
                  intermediate_size=int(weights[HF + "encoder.layers.0.mlp.fc1.weight"].shape[0]))
    projection = weights.get("visual_projection.weight")
    if projection is not None:
        config["projection_dim"] = int(projection.shape[0])
    if config["hidden_size"] % config["num_attention_heads"]:
        raise NotClipVision(f"width {config['hidden_size']} does not split into {config['num_attention_heads']} heads")
    return config


def build_clip_vision(weights: StateDict, what: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A CLIPVisionModelWithProjection holding `weights` (Hugging Face names) and its config."""
    from transformers.models.clip.configuration_clip import CLIPVisionConfig
    from transformers.models.clip.modeling_clip import CLIPVisionModelWithProjection

    from sdgraph.nodes.sd.empty_init import assign_weights, empty_weights

    family = family_of(weights)
    if family is None or HF + "embeddings.patch_embedding.weight" not in weights:
        raise NotClipVision(f"{what}: no CLIP vision model (ViT-L/14, ViT-H/14 or ViT-bigG/14) in its keys")
    config = vision_config(weights, family)
    with empty_weights():
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**config))
    expected = set(model.state_dict())
    missing = sorted(k for k in expected - set(weights) if not k.endswith("position_ids"))
    if missing:
        raise NotClipVision(f"{what}: {len(missing)} CLIP vision weights missing, e.g. {missing[:3]}")
    assign_weights(model, {k: v for k, v in weights.items() if k in expected}, what)
    return model.eval(), config


def load_clip_vision_weights(sd: StateDict, prefix: str, name: str, manager: Any) -> ClipVision:
    """CLIP_VISION from the tensors under `prefix` (either layout), managed in the text encoders' precision."""
    dtype = manager.dtype_for_role("text_encoder")
    weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in hf_weights(sd, prefix).items()}
    model, config = build_clip_vision(weights, name)
    slot = manager.manage(model, f"{name}:clip_vision", "text_encoder")
    if torch.finfo(slot.dtype).bits > 16:  # ComfyUI holds these in fp16 (its text encoders' dtype) on any device
        for part in (model.vision_model.embeddings, model.vision_model.encoder):
            round_weights_to_half(part)
    return ClipVision(slot=slot, image_size=int(config["image_size"]), name=name)


def load_clip_vision_file(path: Any, manager: Any) -> ClipVision:
    """CLIP_VISION of a models/clip_vision file (cached by the manager while the file is unchanged)."""
    from sdgraph.nodes.sd.weight_file import open_weights

    def load(p: Any) -> ClipVision:
        sd = open_weights(p)
        prefix = "visual." if is_open_clip(sd, "visual.") else ""
        return load_clip_vision_weights(sd, prefix, p.name, manager)

    return manager.load(path, "clip_vision", load)
