"""T2I-Adapter style models (models/style_models): StyleModelLoader and StyleModelApply.

STYLE_MODEL -> `StyleModel`: TencentARC's style adapter (keys `style_embedding`, `proj`, `ln_pre`, `ln_post`,
`transformer_layes.N.*`): learned query tokens appended to the CLIP vision tokens, a few pre-norm transformer
blocks (8 heads, QuickGELU MLP), then the query tokens normed and projected to the text encoder's width. Sizes
(width, tokens, depth, output width) are read from the tensors; the released model is 1024 wide, 3 blocks, 8
tokens, 768 out (SD 1.x). It runs on the CPU in float32, where ComfyUI keeps it.

StyleModelApply appends the style tokens of every image (batch flattened into one sequence) to each entry's
text tokens. "multiply" scales the tokens by the strength. "attn_bias" keeps them at full weight and records
log(strength) as an attention bias over them in the entry's "attention_mask" (square over text + style + image
tokens, grown from an existing one; written whenever one exists or the strength is not 1), ComfyUI's
semantics. As in ComfyUI, SD 1.x/2.x/XL UNets do not read that mask (only joint-attention models do), so on them
"attn_bias" acts as strength 1.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from sdgraph.node import Combo, Float, Input, Node, Output, models_in
from sdgraph.nodes.sd.common import manager_of, model_path
from sdgraph.nodes.sd.unclip import CLIP_VISION_OUTPUT
from sdgraph.types import CONDITIONING

STYLE_MODEL = "STYLE_MODEL"
HEADS = 8  # the adapter's head count: not visible in its weights
BLOCK = re.compile(r"transformer_layes\.(\d+)\.")


class NotStyleModel(ValueError):
    """Weights that are not a style model sdgraph can run."""


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
    """A pre-norm transformer block over a sequence-first input [L, N, width]."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, HEADS)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class StyleAdapterNet(nn.Module):
    def __init__(self, width: int, context_dim: int, layers: int, tokens: int) -> None:
        super().__init__()
        self.transformer_layes = nn.Sequential(*[_Block(width) for _ in range(layers)])
        self.style_embedding = nn.Parameter(torch.zeros(1, tokens, width))
        self.ln_pre = nn.LayerNorm(width)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, context_dim))

    def forward(self, vision_tokens: torch.Tensor) -> torch.Tensor:
        """CLIP vision tokens [N, L, width] -> style tokens [N, tokens, context_dim]."""
        tokens = self.style_embedding.shape[1]
        queries = self.style_embedding.expand(vision_tokens.shape[0], -1, -1)
        x = self.ln_pre(torch.cat([vision_tokens, queries], dim=1))
        x = self.transformer_layes(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, -tokens:, :]) @ self.proj


@dataclass
class StyleModel:
    """STYLE_MODEL: the adapter network (CPU, float32)."""

    net: StyleAdapterNet
    name: str = ""

    def cache_nbytes(self) -> int:
        return sum(p.nbytes for p in self.net.parameters())

    @torch.inference_mode()
    def get_cond(self, clip_vision_output: Any) -> torch.Tensor:
        """Style tokens [B, tokens, context] from a CLIP_VISION_OUTPUT's last hidden state."""
        tokens = clip_vision_output.last_hidden_state.float().cpu()
        width = self.net.style_embedding.shape[-1]
        if tokens.shape[-1] != width:
            raise ValueError(f"StyleModelApply.clip_vision_output: its tokens are {tokens.shape[-1]} wide, the style "
                             f"model takes {width} (use the CLIP vision model it was trained with: ViT-L/14)")
        return self.net(tokens)


def build_style_model(sd: Mapping[str, torch.Tensor], name: str) -> StyleModel:
    if "redux_down.weight" in sd:
        raise NotStyleModel(f"{name} is a Flux Redux model; Flux is not an SD-family model sdgraph runs")
    if "style_embedding" not in sd or "proj" not in sd:
        raise NotStyleModel(f"{name} is not a T2I-Adapter style model (no style_embedding / proj keys)")
    _, tokens, width = sd["style_embedding"].shape
    layers = len({m.group(1) for k in sd if (m := BLOCK.match(k))})
    if width % HEADS:
        raise NotStyleModel(f"{name}: width {width} does not split into {HEADS} heads")
    net = StyleAdapterNet(int(width), int(sd["proj"].shape[1]), layers, int(tokens))
    missing, unexpected = net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    if missing or unexpected:
        raise NotStyleModel(f"{name}: weights do not fit a style adapter (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")
    return StyleModel(net.eval(), name)


def grown_mask(mask: torch.Tensor | None, batch: int, n_txt: int, n_new: int, n_ref: int,
               bias: torch.Tensor) -> torch.Tensor:
    """The attention bias over [text, new style tokens, image tokens] (float16), the old text/image blocks kept
    and `bias` on every query's view of the new tokens (rows of text and image tokens)."""
    if mask is None:
        mask = torch.zeros((batch, n_txt + n_ref, n_txt + n_ref), dtype=torch.float16)
    if mask.dtype == torch.bool:
        mask = torch.log(mask.to(dtype=torch.float16))
    total = n_txt + n_new + n_ref
    out = torch.zeros((batch, total, total), dtype=torch.float16)
    after = n_txt + n_new
    out[:, :n_txt, :n_txt] = mask[:, :n_txt, :n_txt]
    out[:, :n_txt, after:] = mask[:, :n_txt, n_txt:]
    out[:, after:, :n_txt] = mask[:, n_txt:, :n_txt]
    out[:, after:, after:] = mask[:, n_txt:, n_txt:]
    out[:, :n_txt, n_txt:after] = bias
    out[:, after:, n_txt:after] = bias
    return out


class StyleModelLoader(Node):
    """Load a T2I-Adapter style model from models/style_models."""

    category = "loaders"
    inputs = [Combo("style_model_name", models_in("style_models"), tooltip="a style adapter in models/style_models")]
    outputs = [Output(STYLE_MODEL)]

    def run(self, style_model_name: str) -> tuple:
        from sdgraph.nodes.sd.loading import read_state_dict

        path = model_path(self.ctx, "style_models", style_model_name)
        try:
            return (manager_of(self.ctx).load(path, "style_model", lambda p: build_style_model(read_state_dict(p),
                                                                                               p.name)),)
        except NotStyleModel as exc:
            raise ValueError(f"StyleModelLoader.style_model_name: {exc}") from exc


class StyleModelApply(Node):
    """Add an image's style to a conditioning: style tokens from its CLIP vision encoding, after the prompt's."""

    category = "conditioning/style_model"
    inputs = [Input("conditioning", CONDITIONING), Input("style_model", STYLE_MODEL),
              Input("clip_vision_output", CLIP_VISION_OUTPUT),
              Float("strength", 1.0, min=0.0, max=10.0, step=0.001, tooltip="how much the style tokens weigh"),
              Combo("strength_type", ["multiply", "attn_bias"],
                    tooltip="multiply: scale the tokens; attn_bias: record an attention bias for them (read only "
                            "by joint-attention models, not SD UNets)")]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning: list, style_model: StyleModel, clip_vision_output: Any, strength: float,
            strength_type: str) -> tuple:
        style = style_model.get_cond(clip_vision_output)
        style = style.reshape(1, -1, style.shape[-1])  # every image's tokens in one sequence
        if strength_type == "multiply":
            style = style * strength
        n_new = style.shape[1]
        out = []
        for cond, extras in conditioning:
            extras = dict(extras)
            if "attention_mask" in extras or (strength_type == "attn_bias" and strength != 1.0):
                bias = torch.log(torch.tensor([strength if strength_type == "attn_bias" else 1.0]))
                ref = extras.get("attention_mask_img_shape", (1, 1))
                mask = grown_mask(extras.get("attention_mask"), cond.shape[0], cond.shape[1], n_new,
                                  ref[0] * ref[1], bias)
                extras["attention_mask"] = mask.to(cond.device)
                extras["attention_mask_img_shape"] = ref
            if style.shape[-1] != cond.shape[-1]:
                raise ValueError(f"StyleModelApply.style_model: its tokens are {style.shape[-1]} wide, the "
                                 f"conditioning's {cond.shape[-1]} (a style model for another text encoder)")
            out.append([torch.cat((cond, style.to(cond.device, cond.dtype)), dim=1), extras])
        return (out,)


NODES = [StyleModelLoader, StyleModelApply]
