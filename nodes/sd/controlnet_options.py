"""Nodes that set options on a CONTROL_NET (the weights stay shared): the ControlNet-Union type."""
from __future__ import annotations

from sdgraph.node import Combo, Input, Node, Output
from sdgraph.nodes.sd.model_objects import ControlNetModel
from sdgraph.types import CONTROL_NET

# ControlNet-Union's (xinsir's union / ProMax) task numbers, in ComfyUI's order
UNION_TYPES: dict[str, int] = {
    "openpose": 0, "depth": 1, "hed/pidi/scribble/ted": 2, "canny/lineart/anime_lineart/mlsd": 3, "normal": 4,
    "segment": 5, "tile": 6, "repaint": 7,
}


class SetUnionControlNetType(Node):
    """Tell a ControlNet-Union model which kind of hint it is given ("auto": let it infer). The choice is
    recorded on the CONTROL_NET as ComfyUI records it (its "control_type" argument); sdgraph cannot load
    ControlNet-Union (ProMax) models yet, and other ControlNets ignore the setting."""

    category = "conditioning/controlnet"
    inputs = [Input("control_net", CONTROL_NET), Combo("type", ["auto", *UNION_TYPES])]
    outputs = [Output(CONTROL_NET)]

    def run(self, control_net: ControlNetModel, type: str) -> tuple:  # noqa: A002 - ComfyUI's input name
        if not isinstance(control_net, ControlNetModel):
            raise ValueError(f"SetUnionControlNetType.control_net: expected a CONTROL_NET, got "
                             f"{control_net.__class__.__name__}")
        number = UNION_TYPES.get(type, -1)
        return (control_net.with_extra_arg("control_type", [number] if number >= 0 else []),)


NODES = [SetUnionControlNetType]
