"""Example node pack: one native node and one ComfyUI-convention node."""
from __future__ import annotations

from sdgraph.node import Int, Node, Output, String
from sdgraph.types import STRING


class TextJoin(Node):
    """Join two strings with a separator."""

    category = "text"
    inputs = [String("first", ""), String("second", ""), String("separator", " ")]
    outputs = [Output(STRING, "text")]

    def run(self, first: str, second: str, separator: str) -> tuple:
        return (f"{first}{separator}{second}",)


class TextRepeat:
    """Repeat a string; written in the ComfyUI convention."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True}),
                             "times": ("INT", {"default": 2, "min": 1, "max": 100})}}

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    FUNCTION = "repeat"
    CATEGORY = "text"
    DESCRIPTION = "Repeat a string a number of times."

    def repeat(self, text: str, times: int):
        return (text * times,)


NODES = [TextJoin]
NODE_CLASS_MAPPINGS = {"TextRepeat": TextRepeat}
NODE_DISPLAY_NAME_MAPPINGS = {"TextRepeat": "Repeat Text"}
