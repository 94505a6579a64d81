"""The GLIGEN grounding network ("textbox" GLIGEN for SD 1.x) in the weight layout ComfyUI reads.

A GLIGEN file holds two kinds of weights:

- `position_net.*`: turns up to 30 (box, text embedding) pairs into grounding tokens. A box (x1, y1, x2, y2, as
  fractions of the latent) becomes a Fourier feature (sin and cos of each coordinate at 8 frequencies
  100 ** (k / 8): 64 numbers), concatenated with the box's pooled text embedding and mapped by a three-layer SiLU
  MLP (`linears.0/2/4`, hidden width 512) to the token width. Empty slots use the learnt
  `null_positive_feature` / `null_position_feature` instead.
- one gated self-attention module per spatial transformer of the UNet, under `<block>.<n>.` and `.fuser.` in its
  key (e.g. `input_blocks.1.1.transformer_blocks.0.fuser.attn.to_q.weight`): after a transformer block's
  self-attention, the visual tokens and the (linearly projected) grounding tokens attend together; the visual
  part of the result is added with gate tanh(alpha_attn), then a GEGLU feed-forward with gate tanh(alpha_dense).

Modules are numbered as ComfyUI numbers them: input blocks, the middle block, output blocks, each by block number
(0..19), which is the order the UNet runs its transformers in ("transformer_index"). Several transformer blocks
under one UNet block share one module (later keys of the file win), as in ComfyUI. Heads: 8 when the grounding
tokens are 768 wide (SD 1.x), else 64-wide heads.

Weights are kept in whatever dtype the model manager gives them and cast to each input's dtype at use, so the
box network runs in float32 and the gated attention in the UNet's dtype.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sdgraph.nodes.sd.transformer_walk import attention

Tensor = torch.Tensor
MAX_OBJECTS = 30
FOURIER_FREQS = 8
POSITION_DIM = FOURIER_FREQS * 2 * 4  # sin and cos of x1, y1, x2, y2
HIDDEN = 512
BLOCK_KINDS = ("input_blocks", "middle_block", "output_blocks")
BLOCK_NUMBERS = 20  # ComfyUI looks for modules under block numbers 0..19
FUSER_PARTS = ("linear.weight", "linear.bias", "attn.to_q.weight", "attn.to_k.weight", "attn.to_v.weight",
               "attn.to_out.0.weight", "attn.to_out.0.bias", "ff.net.0.proj.weight", "ff.net.0.proj.bias",
               "ff.net.2.weight", "ff.net.2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias",
               "alpha_attn", "alpha_dense")
POSITION_PARTS = ("null_positive_feature", "null_position_feature", "linears.0.weight", "linears.0.bias",
                  "linears.2.weight", "linears.2.bias", "linears.4.weight", "linears.4.bias")


class GligenFileError(ValueError):
    """A file that is not a usable GLIGEN file."""


class CastLinear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastLayerNorm(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


def fourier_features(boxes: Tensor) -> Tensor:
    """[..., 4] boxes -> [..., 64]: for each frequency in turn, sin of the four coordinates, then their cos."""
    freqs = (100 ** (torch.arange(FOURIER_FREQS) / FOURIER_FREQS)).to(boxes.device, boxes.dtype)
    scaled = freqs[:, None] * boxes[..., None, :]  # [..., F, 4]
    return torch.stack([scaled.sin(), scaled.cos()], dim=-2).flatten(-3)


class PositionNet(nn.Module):
    def __init__(self, text_dim: int, token_dim: int) -> None:
        super().__init__()
        self.text_dim, self.token_dim = text_dim, token_dim
        self.linears = nn.Sequential(CastLinear(text_dim + POSITION_DIM, HIDDEN), nn.SiLU(),
                                     CastLinear(HIDDEN, HIDDEN), nn.SiLU(), CastLinear(HIDDEN, token_dim))
        self.null_positive_feature = nn.Parameter(torch.zeros(text_dim))
        self.null_position_feature = nn.Parameter(torch.zeros(POSITION_DIM))

    def forward(self, boxes: Tensor, masks: Tensor, texts: Tensor) -> Tensor:
        """boxes [B, N, 4], masks [B, N] (1 = a real box), texts [B, N, text_dim] -> tokens [B, N, token_dim]."""
        keep = masks.unsqueeze(-1)
        null_text = self.null_positive_feature.to(boxes.dtype).view(1, 1, -1)
        null_box = self.null_position_feature.to(boxes.dtype).view(1, 1, -1)
        texts = texts * keep + (1 - keep) * null_text
        positions = fourier_features(boxes) * keep + (1 - keep) * null_box
        return self.linears(torch.cat([texts, positions], dim=-1))


class GEGLU(nn.Module):
    def __init__(self, width: int, inner: int) -> None:
        super().__init__()
        self.proj = CastLinear(width, inner * 2)  # values, then gates

    def forward(self, x: Tensor) -> Tensor:
        values, gates = self.proj(x).chunk(2, dim=-1)
        return values * F.gelu(gates)


class GEGLUFeedForward(nn.Module):
    """Keys `net.0.proj` and `net.2` (net.1 is the training-time dropout)."""

    def __init__(self, width: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(width, width * mult), nn.Identity(), CastLinear(width * mult, width))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = CastLinear(width, inner, bias=False)
        self.to_k = CastLinear(width, inner, bias=False)
        self.to_v = CastLinear(width, inner, bias=False)
        self.to_out = nn.Sequential(CastLinear(inner, width), nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        return self.to_out(attention(self.to_q(x), self.to_k(x), self.to_v(x), self.heads))


class GatedSelfAttention(nn.Module):
    """The module after one transformer's self-attention (the file's `fuser`)."""

    def __init__(self, width: int, token_dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.width = width
        self.linear = CastLinear(token_dim, width)
        self.attn = SelfAttention(width, heads, head_dim)
        self.ff = GEGLUFeedForward(width)
        self.norm1 = CastLayerNorm(width)
        self.norm2 = CastLayerNorm(width)
        self.alpha_attn = nn.Parameter(torch.tensor(0.0))
        self.alpha_dense = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: Tensor, tokens: Tensor) -> Tensor:
        visual = x.shape[1]
        joint = torch.cat([x, self.linear(tokens)], dim=1)
        x = x + torch.tanh(self.alpha_attn.to(x.dtype)) * self.attn(self.norm1(joint))[:, :visual]
        return x + torch.tanh(self.alpha_dense.to(x.dtype)) * self.ff(self.norm2(x))


class GligenNet(nn.Module):
    """The position net and the gated modules in transformer order; `prefixes` are each module's file prefix."""

    def __init__(self, position_net: PositionNet, fusers: list[GatedSelfAttention], prefixes: list[str]) -> None:
        super().__init__()
        self.position_net = position_net
        self.fusers = nn.ModuleList(fusers)
        self.prefixes = prefixes

    @property
    def text_dim(self) -> int:
        return self.position_net.text_dim

    @property
    def token_dim(self) -> int:
        """The grounding tokens' width; ComfyUI pads the text embeddings of empty slots with zeros this wide."""
        return self.fusers[0].linear.in_features

    def file_state(self) -> dict[str, Tensor]:
        """The weights under the file's key names (one key per module part)."""
        out = {f"position_net.{k}": v for k, v in self.position_net.state_dict().items()}
        for prefix, fuser in zip(self.prefixes, self.fusers):
            out.update({f"{prefix}{k}": v for k, v in fuser.state_dict().items()})
        return out


def _fuser_groups(keys: list[str]) -> list[tuple[str, dict[str, str]]]:
    """(the first file prefix, {part: file key}) per UNet block holding `.fuser.` keys, in ComfyUI's order."""
    found: dict[tuple[int, int], tuple[str, dict[str, str]]] = {}
    for key in keys:
        if ".fuser." not in key:
            continue
        part = key.split(".fuser.")[-1]
        for kind_index, kind in enumerate(BLOCK_KINDS):
            for number in range(BLOCK_NUMBERS):
                if f"{kind}.{number}." in key:
                    prefix = key[:len(key) - len(part)]
                    found.setdefault((kind_index, number), (prefix, {}))[1][part] = key
    return [found[k] for k in sorted(found)]


def _heads(width: int, token_dim: int) -> tuple[int, int]:
    if token_dim == 768:
        return 8, width // 8
    return width // 64, 64


def build_gligen(sd: Mapping[str, Tensor], name: str) -> GligenNet:
    """The network of a GLIGEN state dict; a GligenFileError says what is missing or does not fit."""
    keys = list(sd.keys())
    missing = [p for p in POSITION_PARTS if f"position_net.{p}" not in sd]
    if missing:
        raise GligenFileError(f"{name}: not a GLIGEN file: no position_net weights ({', '.join(missing[:3])} missing)")
    groups = _fuser_groups(keys)
    if not groups:
        raise GligenFileError(f"{name}: not a GLIGEN file: no gated attention ('.fuser.') weights under the UNet's "
                              "input_blocks / middle_block / output_blocks")
    text_dim = sd["position_net.null_positive_feature"].shape[0]
    token_dim = sd["position_net.linears.4.weight"].shape[0]
    position_net = PositionNet(text_dim, token_dim)
    _load(position_net, {p: sd[f"position_net.{p}"] for p in POSITION_PARTS}, f"{name}: position_net")
    fusers, prefixes = [], []
    for prefix, parts in groups:
        absent = [p for p in FUSER_PARTS if p not in parts]
        if absent:
            raise GligenFileError(f"{name}: {prefix}* lacks {', '.join(absent[:3])}")
        width, fuser_tokens = sd[parts["linear.weight"]].shape
        if fuser_tokens != token_dim:
            raise GligenFileError(f"{name}: {prefix}linear reads {fuser_tokens}-wide tokens, the position net makes "
                                  f"{token_dim}")
        heads, head_dim = _heads(width, fuser_tokens)
        if heads == 0:
            raise GligenFileError(f"{name}: {prefix}* is {width} wide, less than one 64-wide attention head")
        fuser = GatedSelfAttention(width, fuser_tokens, heads, head_dim)
        _load(fuser, {p: sd[k] for p, k in parts.items() if p in FUSER_PARTS}, f"{name}: {prefix}*")
        fusers.append(fuser)
        prefixes.append(prefix)
    return GligenNet(position_net, fusers, prefixes)


def _load(module: nn.Module, state: dict[str, Tensor], where: str) -> None:
    own = module.state_dict()
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise GligenFileError(f"{where}: {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}")
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)


def object_inputs(boxes: list[tuple[float, float, float, float]], texts: list[Tensor], batch: int, text_dim: int,
                  token_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """(boxes [B, 30, 4], masks [B, 30], texts [B, 30, D]) with the given boxes first, the rest empty (zeros),
    repeated over the batch. Empty text slots are zeros `token_dim` wide, as ComfyUI pads them."""
    count = len(boxes)
    if count > MAX_OBJECTS:
        raise ValueError(f"GLIGEN takes at most {MAX_OBJECTS} boxes per conditioning entry, got {count}")
    if count < MAX_OBJECTS and texts and token_dim != text_dim:
        raise ValueError(f"GLIGEN: this file's text embeddings are {text_dim} wide but its grounding tokens "
                         f"{token_dim}; ComfyUI cannot pad such a file's empty box slots either")
    masks = torch.zeros(MAX_OBJECTS)
    masks[:count] = 1.0
    box_rows = torch.zeros(MAX_OBJECTS, 4)
    text_rows = torch.zeros(MAX_OBJECTS, text_dim)
    for i, (box, text) in enumerate(zip(boxes, texts)):
        box_rows[i] = torch.tensor(box)
        text_rows[i] = text.reshape(-1).float()
    return (box_rows.unsqueeze(0).repeat(batch, 1, 1), masks.unsqueeze(0).repeat(batch, 1),
            text_rows.unsqueeze(0).repeat(batch, 1, 1))
