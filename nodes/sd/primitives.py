"""Primitive value nodes (a number, text or a switch typed once and wired to many inputs) and PreviewAny, which
shows whatever reaches it as text. Pure Python: no torch."""
from __future__ import annotations

import json
import sys
from typing import Any

from sdgraph.node import Boolean, Float, Input, Int, Node, NodeOutput, Output, String
from sdgraph.spec import InputSpec
from sdgraph.types import ANY, BOOLEAN, FLOAT, INT, STRING

LIMIT = sys.maxsize  # ComfyUI's range for the Int and Float primitives: +-(2**63 - 1)


def without_default(spec: InputSpec) -> InputSpec:
    """The widget keeps `spec.default` as its starting value, but /object_info names none (as ComfyUI's
    description of the node does: its clients then start at 0, False or "")."""
    return spec.model_copy(update={"implied_default": True})


class PrimitiveInt(Node):
    """An integer typed once, for any INT input; it can change after each run like a seed."""

    display_name = "Int"
    category = "utils/primitive"
    inputs = [without_default(Int("value", 0, min=-LIMIT, max=LIMIT, control_after_generate=True))]
    outputs = [Output(INT)]

    def run(self, value: int) -> tuple:
        return (value,)


class PrimitiveFloat(Node):
    """A number typed once, for any FLOAT input."""

    display_name = "Float"
    category = "utils/primitive"
    inputs = [without_default(Float("value", 0.0, min=-LIMIT, max=LIMIT, step=None))]  # type: ignore[arg-type]
    outputs = [Output(FLOAT)]

    def run(self, value: float) -> tuple:
        return (value,)


class PrimitiveString(Node):
    """One line of text typed once, for any STRING input."""

    display_name = "String"
    category = "utils/primitive"
    inputs = [String("value")]
    outputs = [Output(STRING)]

    def run(self, value: str) -> tuple:
        return (value,)


class PrimitiveStringMultiline(Node):
    """Text of several lines typed once, for any STRING input."""

    display_name = "String (Multiline)"
    category = "utils/primitive"
    inputs = [String("value", multiline=True)]
    outputs = [Output(STRING)]

    def run(self, value: str) -> tuple:
        return (value,)


class PrimitiveBoolean(Node):
    """A switch set once, for any BOOLEAN input."""

    display_name = "Boolean"
    category = "utils/primitive"
    inputs = [without_default(Boolean("value", False))]
    outputs = [Output(BOOLEAN)]

    def run(self, value: bool) -> tuple:
        return (value,)


def preview_text(value: Any) -> str:
    """How PreviewAny shows a value, as ComfyUI's does: text as it is, numbers and booleans by `str`, None as
    "None", anything else as JSON when it is JSON-able, else by `str`."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)):
        return str(value)
    if value is None:
        return "None"
    try:
        return json.dumps(value)
    except Exception:  # noqa: BLE001 - any value may arrive: tensors, models, objects that refuse to serialise
        try:
            return str(value)
        except Exception:  # noqa: BLE001
            return "source exists, but could not be serialized."


class PreviewAny(Node):
    """Show any value as text on the node (the executed message's output is {"text": [the text]})."""

    display_name = "Preview Any"
    category = "utils"
    output_node = True
    inputs = [Input("source", ANY)]
    outputs = []

    def run(self, source: Any = None) -> NodeOutput:
        return NodeOutput(ui={"text": [preview_text(source)]})


NODES = [PrimitiveInt, PrimitiveFloat, PrimitiveString, PrimitiveStringMultiline, PrimitiveBoolean, PreviewAny]
