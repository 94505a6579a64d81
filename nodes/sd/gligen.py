"""GLIGEN: GLIGENLoader (models/gligen) and GLIGENTextBoxApply (a text box added to a conditioning).

GLIGEN -> `GligenModel`: the network of `gligen_net` under the model manager (fp16 on a GPU, as ComfyUI halves
it), with `placed()` for the network on the compute device. GLIGENTextBoxApply encodes its text with the CLIP
(the pooled output before any text projection, as ComfyUI's "unprojected") and appends
(pooled, height // 8, width // 8, y // 8, x // 8) to each entry's ("position", model, boxes) "gligen" extra;
sampling applies it (`gligen_cond`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgraph.limits import current_limits, refusal
from sdgraph.node import Combo, Input, Int, Node, Output, String, models_in
from sdgraph.nodes.sd.common import MAX_RESOLUTION, manager_of, model_path
from sdgraph.nodes.sd.gligen_net import MAX_OBJECTS, GligenFileError, GligenNet, build_gligen
from sdgraph.nodes.sd.model_objects import ClipModel
from sdgraph.nodes.sd.text_encoding import check_prompt_chars, encode_prompt
from sdgraph.nodes.sd.weight_file import open_weights
from sdgraph.paths import Dirs
from sdgraph.types import CLIP, CONDITIONING

if TYPE_CHECKING:
    from sdgraph.models import ManagedModule, ModelManager

GLIGEN = "GLIGEN"


@dataclass
class GligenModel:
    slot: "ManagedModule"
    name: str = ""

    @property
    def model(self) -> GligenNet:
        return self.slot.module

    def cache_nbytes(self) -> int:
        return 0  # the module belongs to the model manager

    def placed(self) -> GligenNet:
        return self.slot.manager.acquire(self.slot)


def load_gligen(path: Path, manager: "ModelManager") -> GligenModel:
    def loader(file: Path) -> GligenModel:
        try:
            net = build_gligen(open_weights(file), file.name)
        except GligenFileError as exc:
            raise ValueError(f"GLIGENLoader.gligen_name: {exc}") from None
        return GligenModel(manager.manage(net, f"{file.name}:gligen", "gligen"), file.name)
    return manager.load(path, "gligen", loader)


class GLIGENLoader(Node):
    """Load a GLIGEN grounding model (box-conditioned attention for SD 1.x) from models/gligen."""

    category = "loaders"
    inputs = [Combo("gligen_name", models_in("gligen"))]
    outputs = [Output(GLIGEN)]

    def run(self, gligen_name: str) -> tuple:
        return (load_gligen(model_path(self.ctx, "gligen", gligen_name), manager_of(self.ctx)),)


def _size(name: str, default: int, low: int) -> Any:
    return Int(name, default, min=low, max=MAX_RESOLUTION, step=8)


class GLIGENTextBoxApply(Node):
    """Place a text in a box of the image: GLIGEN steers what appears there (pixel units, multiples of 8)."""

    category = "conditioning/gligen"
    inputs = [Input("conditioning_to", CONDITIONING), Input("clip", CLIP), Input("gligen_textbox_model", GLIGEN),
              String("text", multiline=True, dynamicPrompts=True), _size("width", 64, 8), _size("height", 64, 8),
              _size("x", 0, 0), _size("y", 0, 0)]
    outputs = [Output(CONDITIONING)]

    def run(self, conditioning_to: list, clip: ClipModel, gligen_textbox_model: GligenModel, text: str,
            width: int, height: int, x: int, y: int) -> tuple:
        where = "GLIGENTextBoxApply.text"
        _, pooled = encode_prompt(clip, text, self.ctx.limits, where, unprojected=True)
        _check_text_width(pooled, gligen_textbox_model)
        box = (pooled, height // 8, width // 8, y // 8, x // 8)
        out = []
        for cond, extras in conditioning_to:
            previous = extras["gligen"][2] if "gligen" in extras else []
            if len(previous) + 1 > MAX_OBJECTS:
                raise ValueError(f"GLIGENTextBoxApply.conditioning_to: already holds {len(previous)} boxes; GLIGEN "
                                 f"takes at most {MAX_OBJECTS}")
            out.append([cond, {**extras, "gligen": ("position", gligen_textbox_model, [*previous, box])}])
        return (out,)

    @classmethod
    def validate_inputs(cls, dirs: Dirs, text: str = "", **_: Any) -> str | None:
        return refusal(lambda: check_prompt_chars(current_limits(), "GLIGENTextBoxApply.text", text))


def _check_text_width(pooled: Any, gligen: GligenModel) -> None:
    if pooled is None:
        raise ValueError("GLIGENTextBoxApply.clip: this CLIP gives no pooled output, which GLIGEN boxes need")
    want = gligen.model.text_dim
    if pooled.shape[-1] != want:
        raise ValueError(f"GLIGENTextBoxApply.gligen_textbox_model: {gligen.name} reads {want}-wide text "
                         f"embeddings, this CLIP's pooled output is {pooled.shape[-1]} wide (a GLIGEN file for "
                         "another model family)")


NODES = [GLIGENLoader, GLIGENTextBoxApply]
