"""Small pure-Python nodes for engine tests: both node styles, with call counters."""
from __future__ import annotations

from collections import Counter
from typing import Any

from sdgraph.node import Boolean, Combo, Float, Hidden, Input, Int, Node, NodeOutput, Output, String
from sdgraph.types import FLOAT, INT, STRING

CALLS: Counter[str] = Counter()
OUTSIDE_STATE = {"version": 1}


class Number(Node):
    """A constant integer."""

    category = "test"
    inputs = [Int("value", 0, min=-100, max=100)]
    outputs = [Output(INT)]

    def run(self, value: int) -> tuple:
        CALLS["Number"] += 1
        return (value,)


class Add(Node):
    category = "test"
    aliases = ("Plus",)
    inputs = [Input("a", INT), Input("b", INT), Int("bias", 0, optional=True)]
    outputs = [Output(INT, "sum")]

    def run(self, a: int, b: int, bias: int = 0) -> tuple:
        CALLS["Add"] += 1
        return (a + b + bias,)


class Scale(Node):
    category = "test"
    inputs = [Input("x", INT), Float("factor", 1.0, min=0.0, max=10.0), Combo("mode", ["round", "floor"])]
    outputs = [Output(FLOAT)]

    def run(self, x: int, factor: float, mode: str) -> tuple:
        CALLS["Scale"] += 1
        return (x * factor,)


class Show(Node):
    """Output node: reports its value as UI text."""

    category = "test"
    output_node = True
    inputs = [Input("value", "*"), String("label", "", optional=True)]

    def run(self, value: Any, label: str = "") -> NodeOutput:
        CALLS["Show"] += 1
        return NodeOutput((), {"text": [f"{label}{value}"]})


class Fail(Node):
    category = "test"
    inputs = [Input("x", INT), Boolean("explode", True)]
    outputs = [Output(INT)]

    def run(self, x: int, explode: bool) -> tuple:
        CALLS["Fail"] += 1
        if explode:
            raise ValueError("boom")
        return (x,)


class Outside(Node):
    """Depends on outside state through its fingerprint."""

    category = "test"
    inputs = [String("name", "x")]
    outputs = [Output(INT)]

    @classmethod
    def fingerprint(cls, dirs: Any, name: str) -> Any:
        return OUTSIDE_STATE["version"]

    def run(self, name: str) -> tuple:
        CALLS["Outside"] += 1
        return (OUTSIDE_STATE["version"],)


class Random(Node):
    category = "test"
    not_idempotent = True
    inputs = []
    outputs = [Output(INT)]

    def run(self) -> tuple:
        CALLS["Random"] += 1
        return (CALLS["Random"],)


class Slow(Node):
    """Reports progress for `steps` steps; the test's hook runs at step `hook_at`."""

    category = "test"
    inputs = [Input("x", INT), Int("steps", 5, min=1, max=1000)]
    outputs = [Output(INT)]
    hook: Any = None

    def run(self, x: int, steps: int) -> tuple:
        for i in range(steps):
            CALLS["Slow.step"] += 1
            if Slow.hook is not None:
                Slow.hook(i)
            self.ctx.progress(i + 1, steps)
        return (x,)


class Even(Node):
    category = "test"
    inputs = [Int("value", 0)]
    outputs = [Output(INT)]

    @classmethod
    def validate_inputs(cls, dirs: Any, value: int) -> str | None:
        return None if value % 2 == 0 else f"value must be even, got {value}"

    def run(self, value: int) -> tuple:
        return (value,)


class Prompted(Node):
    """Sees the hidden inputs the engine fills in."""

    category = "test"
    output_node = True
    inputs = [Hidden("prompt", "PROMPT"), Hidden("unique_id", "UNIQUE_ID")]

    def run(self, prompt: dict, unique_id: str) -> NodeOutput:
        return NodeOutput((), {"text": [f"{unique_id}:{len(prompt)}"]})


class WhoAmI(Node):
    """Passes on its own node id (the custom-node pattern of reading UNIQUE_ID)."""

    category = "test"
    inputs = [Hidden("unique_id", "UNIQUE_ID")]
    outputs = [Output(INT)]

    def run(self, unique_id: str) -> tuple:
        CALLS["WhoAmI"] += 1
        return (int(unique_id),)


class Unserialisable(Node):
    """An output node whose UI value refers to itself, so it cannot be written as JSON."""

    category = "test"
    output_node = True
    inputs = [Input("value", INT)]

    def run(self, value: int) -> NodeOutput:
        loop: list = [value]
        loop.append(loop)
        return NodeOutput((), {"text": loop})


NODES = [Number, Add, Scale, Show, Fail, Outside, Random, Slow, Even, Prompted, WhoAmI, Unserialisable]


# ---- ComfyUI-convention classes ---------------------------------------------------------------------------


class ComfyRange:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3, "min": 1, "max": 10})}}

    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "make"
    CATEGORY = "comfy"

    def make(self, count):
        CALLS["ComfyRange"] += 1
        return (list(range(count)),)


class ComfyDouble:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"forceInput": True})},
                "optional": {"offset": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("doubled",)
    FUNCTION = "double"
    CATEGORY = "comfy"

    def double(self, x, offset=0):
        CALLS["ComfyDouble"] += 1
        return (2 * x + offset,)


class ComfyCollect:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT",), "sep": ("STRING", {"default": ","})},
                "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID", "extra_pnginfo": "EXTRA_PNGINFO"}}

    RETURN_TYPES = ()
    INPUT_IS_LIST = True
    OUTPUT_NODE = True
    FUNCTION = "collect"
    CATEGORY = "comfy"

    def collect(self, values, sep, prompt=None, unique_id=None, extra_pnginfo=None):
        CALLS["ComfyCollect"] += 1
        return {"ui": {"text": [sep[0].join(str(v) for v in values)], "id": [unique_id[0]]}}


class ComfyChoice:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pick": (["a", "b"],), "n": ("INT", {"default": 0, "min": 0, "max": 5})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "go"
    CATEGORY = "comfy"

    @classmethod
    def VALIDATE_INPUTS(cls, n):
        return True if n != 3 else "three is not allowed"

    @classmethod
    def IS_CHANGED(cls, pick, n):
        return OUTSIDE_STATE["version"]

    def go(self, pick, n):
        CALLS["ComfyChoice"] += 1
        return (pick * max(n, 1),)


class ComfyQuiet:
    """An output node with nothing to show: it returns an empty dict, which the ecosystem accepts."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "quiet"
    CATEGORY = "comfy"

    def quiet(self, x):
        CALLS["ComfyQuiet"] += 1
        return {}


NODE_CLASS_MAPPINGS = {"ComfyQuiet": ComfyQuiet, "ComfyRange": ComfyRange, "ComfyDouble": ComfyDouble, "ComfyCollect": ComfyCollect,
                       "ComfyChoice": ComfyChoice}
NODE_DISPLAY_NAME_MAPPINGS = {"ComfyRange": "Range (list)"}
