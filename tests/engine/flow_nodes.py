"""Flow-control toy nodes in ComfyUI's class convention: lazy inputs, expansion, blockers, async functions.

Written against the ecosystem's conventions only (no sdgraph import but the blocker class), so the same classes
run in ComfyUI's own executor: `tools/comfy_reference/flow_semantics.py` records what ComfyUI does with the
workflows of `FLOW_CASES`, and `tests/engine/test_flow_control.py` checks sdgraph does the same.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

try:  # inside ComfyUI (the reference harness)
    from comfy_execution.graph_utils import ExecutionBlocker
except ImportError:
    from sdgraph.node import ExecutionBlocker

CALLS: Counter[str] = Counter()
SEEN: list[tuple[str, Any]] = []  # what lazy checks were given, in order
TIMES: dict[str, tuple[float, float]] = {}  # async node label -> (start, end)
HOOKS: dict[str, Any] = {}  # "add": called with the running count of FlowAdd calls


def reset() -> None:
    CALLS.clear()
    SEEN.clear()
    TIMES.clear()
    HOOKS.clear()


class FlowNumber:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -1000, "max": 1000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    CATEGORY = "flow"

    def go(self, value):
        CALLS["FlowNumber"] += 1
        return (value,)


class FlowAdd:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0, "min": -100000, "max": 100000}),
                             "b": ("INT", {"default": 0, "min": -100000, "max": 100000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    CATEGORY = "flow"

    def go(self, a, b):
        CALLS["FlowAdd"] += 1
        if "add" in HOOKS:
            HOOKS["add"](CALLS["FlowAdd"])
        return (a + b,)


class FlowSwitch:
    """if/else: evaluates only the branch the condition picks."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"condition": ("BOOLEAN", {"default": True}),
                             "on_true": ("INT", {"lazy": True, "forceInput": True}),
                             "on_false": ("INT", {"lazy": True, "forceInput": True})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    CATEGORY = "flow"

    def check_lazy_status(self, condition, on_true=None, on_false=None):
        SEEN.append(("switch", (condition, on_true, on_false)))
        needed = "on_true" if condition else "on_false"
        return [needed] if (on_true if condition else on_false) is None else []

    def go(self, condition, on_true=None, on_false=None):
        CALLS["FlowSwitch"] += 1
        return (on_true if condition else on_false,)


class FlowFirstNonZero:
    """Asks for its lazy inputs one at a time, until one is not zero: a check called again and again."""

    @classmethod
    def INPUT_TYPES(cls):
        lazy = ("INT", {"lazy": True, "forceInput": True})
        return {"required": {"a": lazy, "b": lazy, "c": lazy}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    CATEGORY = "flow"

    def check_lazy_status(self, a=None, b=None, c=None):
        SEEN.append(("first", (a, b, c)))
        for name, value in (("a", a), ("b", b), ("c", c)):
            if value is None:
                return [name]
            if value != 0:
                return []
        return []

    def go(self, a=None, b=None, c=None):
        CALLS["FlowFirstNonZero"] += 1
        return (next((v for v in (a, b, c) if v), 0),)


class FlowRepeatAdd:
    """A for-loop by expansion: adds `step` to `value`, `count` times, as a chain of new FlowAdd nodes."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}),
                             "step": ("INT", {"default": 1, "min": -100, "max": 100}),
                             "count": ("INT", {"default": 3, "min": 0, "max": 100})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    CATEGORY = "flow"

    def go(self, value, step, count, unique_id):
        CALLS["FlowRepeatAdd"] += 1
        graph = {}
        current: Any = value
        for i in range(count):
            node_id = f"{unique_id}.add{i}"
            graph[node_id] = {"class_type": "FlowAdd", "inputs": {"a": current, "b": step}}
            current = [node_id, 0]
        return {"result": (current,), "expand": graph}


class FlowCountdown:
    """A loop by nested expansion: each step expands into one FlowAdd and the next FlowCountdown."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}),
                             "remaining": ("INT", {"default": 3, "min": 0, "max": 50})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    CATEGORY = "flow"

    def go(self, value, remaining, unique_id):
        CALLS["FlowCountdown"] += 1
        if remaining == 0:
            return (value,)
        add, step = f"{unique_id}.a", f"{unique_id}.n"
        graph = {add: {"class_type": "FlowAdd", "inputs": {"a": value, "b": 1}},
                 step: {"class_type": "FlowCountdown", "inputs": {"value": [add, 0], "remaining": remaining - 1}}}
        return {"result": ([step, 0],), "expand": graph}


class FlowGate:
    """Passes its value on, or blocks every node downstream (with a message, if one is given)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}), "open": ("BOOLEAN", {"default": True}),
                             "message": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    CATEGORY = "flow"

    def go(self, value, open, message):
        CALLS["FlowGate"] += 1
        return (value if open else ExecutionBlocker(message or None),)


class FlowSleep:
    """An async node: awaits `seconds`, then passes its value on."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True}),
                             "seconds": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 10.0}),
                             "label": ("STRING", {"default": "sleep"})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "go"
    CATEGORY = "flow"

    async def go(self, value, seconds, label):
        CALLS["FlowSleep"] += 1
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        if value < 0:
            raise ValueError(f"{label}: a negative value")
        TIMES[label] = (start, time.perf_counter())
        return (value,)


class FlowShow:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"forceInput": True})}}

    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "go"
    CATEGORY = "flow"

    def go(self, value):
        CALLS["FlowShow"] += 1
        return {"ui": {"value": [value]}}


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (FlowNumber, FlowAdd, FlowSwitch, FlowFirstNonZero,
                                                     FlowRepeatAdd, FlowCountdown, FlowGate, FlowSleep, FlowShow)}


def summary(messages: list[tuple[str, dict[str, Any]]], calls: dict[str, int], outputs: dict[str, Any],
            seen: list[Any]) -> dict[str, Any]:
    """What one run did, in a shape both engines produce (the same function summarises sdgraph's runs)."""
    executing = [d for e, d in messages if e == "executing" and d.get("node") is not None]
    errors = [d for e, d in messages if e == "execution_error"]
    ended = next((e for e, _ in reversed(messages) if e in ("execution_success", "execution_error",
                                                          "execution_interrupted")), None)
    return {
        "calls": dict(sorted(calls.items())),
        "outputs": {node: ui for node, ui in sorted(outputs.items())},
        "ran": sorted({d["node"] for d in executing}),
        "display": {d["node"]: d["display_node"] for d in executing},
        "errors": [{"node_id": d.get("node_id"), "exception_type": d.get("exception_type"),
                    "exception_message": d.get("exception_message")} for d in errors],
        "success": any(e == "execution_success" for e, _ in messages),
        "lazy_checks": [[who, list(given)] for who, given in seen],
        "ended": ended,
    }


def _n(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs}


def switch(condition: bool) -> dict[str, Any]:
    return {"1": _n("FlowNumber", value=2), "2": _n("FlowAdd", a=["1", 0], b=10),
            "3": _n("FlowNumber", value=5), "4": _n("FlowAdd", a=["3", 0], b=20),
            "5": _n("FlowSwitch", condition=condition, on_true=["2", 0], on_false=["4", 0]),
            "6": _n("FlowShow", value=["5", 0])}


# name -> workflow; each is run twice in a row in one executor (the second run shows what is cached)
FLOW_CASES: dict[str, dict[str, Any]] = {
    "switch_true": switch(True),
    "switch_false": switch(False),
    "first_non_zero": {"1": _n("FlowNumber", value=0), "2": _n("FlowNumber", value=7),
                       "3": _n("FlowNumber", value=9),
                       "4": _n("FlowFirstNonZero", a=["1", 0], b=["2", 0], c=["3", 0]),
                       "5": _n("FlowShow", value=["4", 0])},
    "repeat_add": {"1": _n("FlowNumber", value=4), "2": _n("FlowRepeatAdd", value=["1", 0], step=3, count=5),
                   "3": _n("FlowShow", value=["2", 0])},
    "countdown": {"1": _n("FlowNumber", value=10), "2": _n("FlowCountdown", value=["1", 0], remaining=4),
                  "3": _n("FlowShow", value=["2", 0])},
    "gate_closed_silent": {"1": _n("FlowNumber", value=1), "2": _n("FlowGate", value=["1", 0], open=False, message=""),
                           "3": _n("FlowAdd", a=["2", 0], b=1), "4": _n("FlowShow", value=["3", 0]),
                           "5": _n("FlowShow", value=["1", 0])},
    "gate_closed_message": {"1": _n("FlowNumber", value=1),
                            "2": _n("FlowGate", value=["1", 0], open=False, message="not today"),
                            "3": _n("FlowShow", value=["2", 0])},
    "gate_open": {"1": _n("FlowNumber", value=1), "2": _n("FlowGate", value=["1", 0], open=True, message=""),
                  "3": _n("FlowShow", value=["2", 0])},
    "async_pair": {"1": _n("FlowNumber", value=3),
                   "2": _n("FlowSleep", value=["1", 0], seconds=0.3, label="left"),
                   "3": _n("FlowSleep", value=["1", 0], seconds=0.3, label="right"),
                   "4": _n("FlowAdd", a=["2", 0], b=["3", 0]), "5": _n("FlowShow", value=["4", 0])},
}
