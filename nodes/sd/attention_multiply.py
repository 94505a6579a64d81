"""Scale the query, key, value and output projections of the attention layers (an experiment ComfyUI ships):
each is a weight patch multiplying the projection's weight and bias."""
from __future__ import annotations

from typing import Any

from sdgraph.node import Float, Input, Node, Output
from sdgraph.nodes.sd.model_objects import ClipModel, DiffusionModel
from sdgraph.types import CLIP, MODEL

_CATEGORY = "_for_testing/attention_experiments"
# projection -> the parameter-name endings of its weight and bias (UNet attention, CLIP self-attention)
_UNET_PROJECTIONS = {"q": "to_q", "k": "to_k", "v": "to_v", "out": "to_out.0"}
_CLIP_PROJECTIONS = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                     "out": "self_attn.out_proj"}


def _factor(name: str) -> Any:
    return Float(name, 1.0, min=0.0, max=10.0, step=0.01)


def scale_projections(value: Any, endings: dict[str, str], factors: dict[str, float]) -> Any:
    """A clone of `value` with each projection's weight and bias multiplied by its factor."""
    out = value.clone()
    keys = list(out.model_state_dict())
    for projection, stem in endings.items():
        matching = [k for k in keys if k.endswith((f"{stem}.weight", f"{stem}.bias"))]
        if matching and factors[projection] != 1.0:
            out.add_patches({k: (None,) for k in matching}, 0.0, factors[projection])
    return out


class _UNetAttentionMultiply(Node):
    layer = ""
    category = _CATEGORY
    inputs = [Input("model", MODEL), _factor("q"), _factor("k"), _factor("v"), _factor("out")]
    outputs = [Output(MODEL)]

    def run(self, model: DiffusionModel, q: float, k: float, v: float, out: float) -> tuple:
        endings = {p: f"{self.layer}.{stem}" for p, stem in _UNET_PROJECTIONS.items()}
        return (scale_projections(model, endings, {"q": q, "k": k, "v": v, "out": out}),)


class UNetSelfAttentionMultiply(_UNetAttentionMultiply):
    """Scale the projections of the UNet's self-attention layers."""

    layer = "attn1"


class UNetCrossAttentionMultiply(_UNetAttentionMultiply):
    """Scale the projections of the UNet's cross-attention (text) layers."""

    layer = "attn2"


class CLIPAttentionMultiply(Node):
    """Scale the projections of the text encoders' self-attention layers."""

    category = _CATEGORY
    inputs = [Input("clip", CLIP), _factor("q"), _factor("k"), _factor("v"), _factor("out")]
    outputs = [Output(CLIP)]

    def run(self, clip: ClipModel, q: float, k: float, v: float, out: float) -> tuple:
        return (scale_projections(clip, _CLIP_PROJECTIONS, {"q": q, "k": k, "v": v, "out": out}),)


NODES = [UNetSelfAttentionMultiply, UNetCrossAttentionMultiply, CLIPAttentionMultiply]
