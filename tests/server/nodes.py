"""Small pure-Python nodes for server tests and the load benchmark (no torch), and an executor over them."""
from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path
from typing import Any

from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.node import Float, Input, Int, Node, NodeOutput, Output, String
from sdgraph.output_names import next_counter, output_folder, write_new
from sdgraph.paths import Dirs
from sdgraph.registry import Registry
from tests.engine.toy_nodes import Unserialisable

INT = "INT"
GATES: dict[str, threading.Event] = {}


def gate(name: str) -> threading.Event:
    return GATES.setdefault(name, threading.Event())


class Number(Node):
    inputs = [Int("value", 0, min=-(10**12), max=10**12)]
    outputs = [Output(INT)]

    def run(self, value: int) -> tuple:
        return (value,)


class Add(Node):
    inputs = [Input("a", INT), Input("b", INT)]
    outputs = [Output(INT)]

    def run(self, a: int, b: int) -> tuple:
        return (a + b,)


class Show(Node):
    output_node = True
    inputs = [Input("value", INT)]

    def run(self, value: int) -> NodeOutput:
        return NodeOutput((), {"text": [str(value)]})


class Slow(Node):
    """Sleeps in steps, reporting progress (and so checking for interrupts) at each."""

    inputs = [Input("value", INT), Float("seconds", 0.1, min=0, max=60), Int("steps", 5, min=1, max=1000)]
    outputs = [Output(INT)]

    def run(self, value: int, seconds: float, steps: int) -> tuple:
        for i in range(steps):
            time.sleep(seconds / steps)
            self.ctx.progress(i + 1, steps)
        return (value,)


class Spin(Node):
    """Keeps the CPU (and the GIL) busy for a while: the worst case for the HTTP side's latency."""

    inputs = [Input("value", INT), Float("seconds", 0.05, min=0, max=60)]
    outputs = [Output(INT)]

    def run(self, value: int, seconds: float) -> tuple:
        deadline = time.perf_counter() + seconds
        count = 0
        while time.perf_counter() < deadline:
            count += 1
        return (value,)


class Gate(Node):
    """Blocks until the named gate opens (tests hold the worker here), checking for interrupts."""

    not_idempotent = True
    inputs = [Input("value", INT), String("name", "g")]
    outputs = [Output(INT)]

    def run(self, value: int, name: str) -> tuple:
        event = gate(name)
        deadline = time.monotonic() + 20
        while not event.wait(0.01):
            self.ctx.check_interrupt()
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {name} never opened")
        return (value,)


class Fail(Node):
    inputs = [Input("value", INT), String("message", "boom")]
    outputs = [Output(INT)]

    def run(self, value: int, message: str) -> tuple:
        raise RuntimeError(message)


class OutOfMemory(Node):
    inputs = [Input("value", INT)]
    outputs = [Output(INT)]

    def run(self, value: int) -> tuple:
        raise MemoryError("CUDA out of memory (simulated)")


class Exit(Node):
    """Raises SystemExit: not even an Exception, so it escapes the executor's own handling."""

    inputs = [Input("value", INT)]
    outputs = [Output(INT)]

    def run(self, value: int) -> tuple:
        raise SystemExit(3)


class HardExit(Node):
    """Ends the process on the spot, as a segfault or the OOM killer would: nothing below it runs."""

    inputs = [Input("value", INT)]
    outputs = [Output(INT)]

    def run(self, value: int) -> tuple:
        os._exit(9)


class Previewer(Node):
    inputs = [Input("value", INT)]
    outputs = [Output(INT)]

    def run(self, value: int) -> tuple:
        from PIL import Image

        image = Image.new("RGB", (8, 8), (255, 0, 0))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        self.ctx.progress(1, 2, ("PNG", buffer.getvalue()))
        self.ctx.progress(2, 2, image)
        return (value,)


class SaveText(Node):
    """Saves `count` small files `<prefix>_<counter:05>_.txt` in the output directory, by SaveImage's rules (never
    overwriting, counting up), `pad_bytes` zeros after the text, and passes its value on."""

    output_node = True
    inputs = [Input("value", "INT"), String("filename_prefix", "sdgraph"), Int("count", 1, min=1, max=8),
              Int("pad_bytes", 0, min=0, max=64 * 1024 * 1024)]
    outputs = [Output("INT")]

    def run(self, value: int, filename_prefix: str, count: int, pad_bytes: int = 0) -> NodeOutput:
        folder, subfolder, stem = output_folder(self.ctx.dirs.output, filename_prefix)
        counter = next_counter(folder, stem, ".txt")
        records = []
        for i in range(count):
            name, counter = write_new(folder, stem, ".txt", counter, lambda f: f.write(f"value {value} #{i}".encode() + bytes(pad_bytes)))
            records.append({"filename": name, "subfolder": subfolder, "type": "output"})
            counter += 1
        return NodeOutput((value,), {"images": records})


NODES = [Number, Add, Show, Slow, Spin, Gate, Fail, OutOfMemory, Exit, HardExit, Unserialisable, Previewer,
         SaveText]


def make_executor(base: Path, models: Any = None) -> Executor:
    """An executor over these nodes only, with its directories under `base`."""
    registry = Registry()
    registry.add_native(NODES, "server-tests")
    assert not registry.problems, registry.problems
    return Executor(registry, Services(dirs=Dirs(base=base, extra_model_roots=[]), models=models))


def chain(value: int = 1, *, middle: str | None = None, **middle_inputs: object) -> dict:
    """Number -> [middle] -> Show, in the API format."""
    prompt: dict = {"1": {"class_type": "Number", "inputs": {"value": value}}}
    source = ["1", 0]
    if middle is not None:
        prompt["2"] = {"class_type": middle, "inputs": {"value": source, **middle_inputs}}
        source = ["2", 0]
    prompt["3"] = {"class_type": "Show", "inputs": {"value": source}}
    return prompt
