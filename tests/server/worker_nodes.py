"""Test nodes for the worker backends (no torch): a model loader that takes a while, a node that uses the model
and sleeps (so two workers are not bound by the 2 cores), nodes that end their process, and prompts made of them
(with SaveText, of tests.server.nodes).

Every real load appends "<pid> <name>" to <base>/loads.log, so a test counts the loads of each worker process.
"""
from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Any

from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.node import Combo, Float, Input, Int, Node, NodeOutput, Output, models_in
from sdgraph.paths import Dirs
from sdgraph.registry import Registry
from tests.server.nodes import NODES

TOY_MODEL = "TOY_MODEL"
LOAD_SECONDS = 0.3


HELD: dict[str, str] = {}  # this process's one loaded model, as a model manager with room for one holds it


class ToyLoad(Node):
    """Loads a 'model' (sleeps LOAD_SECONDS) unless this process holds it already; loading one drops the other."""

    not_idempotent = True  # runs each time: the process's model slot, not the output cache, decides a load
    inputs = [Combo("ckpt_name", models_in("checkpoints"))]
    outputs = [Output(TOY_MODEL)]

    def run(self, ckpt_name: str) -> tuple:
        if HELD.get("model") != ckpt_name:
            time.sleep(LOAD_SECONDS)
            HELD["model"] = ckpt_name
            with open(self.ctx.services.dirs.base / "loads.log", "a") as log:
                log.write(f"{os.getpid()} {ckpt_name}\n")
        return (ckpt_name,)


class UseModel(Node):
    """Runs the model for a while (sleeping, with progress) and shows which process did it."""

    output_node = True
    inputs = [Input("model", TOY_MODEL), Int("seed", 0, min=0, max=10**9), Float("seconds", 0.1, min=0, max=60),
              Int("steps", 2, min=1, max=100)]

    def run(self, model: str, seed: int, seconds: float, steps: int) -> NodeOutput:
        for i in range(steps):
            time.sleep(seconds / steps)
            self.ctx.progress(i + 1, steps)
        return NodeOutput((), {"text": [f"{model} {seed} {os.getpid()}"]})


class ExitOnce(Node):
    """Ends its process (os._exit) the first time it runs for a marker name, then passes its value on."""

    not_idempotent = True
    inputs = [Input("value", "INT"), Float("delay", 0.3, min=0, max=60)]
    outputs = [Output("INT")]

    def run(self, value: int, delay: float) -> tuple:
        marker = self.ctx.services.dirs.base / f"exited-{self.ctx.prompt_id}"
        time.sleep(delay)
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(9)
        return (value,)


class Segfault(Node):
    """Reads address 0, as a broken native extension would: the process dies of SIGSEGV."""

    inputs = [Input("value", "INT")]
    outputs = [Output("INT")]

    def run(self, value: int) -> tuple:
        ctypes.string_at(0)
        return (value,)


WORKER_NODES = [ToyLoad, UseModel, ExitOnce, Segfault]


def make_executor(base: Path) -> Executor:
    registry = Registry()
    registry.add_native([*NODES, *WORKER_NODES], "worker-tests")
    assert not registry.problems, registry.problems
    return Executor(registry, Services(dirs=Dirs(base=base, extra_model_roots=[])))


def add_models(base: Path, *names: str) -> None:
    folder = base / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"toy")


def model_prompt(ckpt: str, seed: int, seconds: float = 0.1, steps: int = 2) -> dict[str, Any]:
    return {"1": {"class_type": "ToyLoad", "inputs": {"ckpt_name": ckpt}},
            "2": {"class_type": "UseModel", "inputs": {"model": ["1", 0], "seed": seed, "seconds": seconds,
                                                       "steps": steps}}}


def save_prompt(value: int, prefix: str = "sdgraph", count: int = 1, exit_after: bool = False,
                pad_bytes: int = 0) -> dict[str, Any]:
    """Number -> SaveText -> [ExitOnce: the process dies after the save, the first time] -> Show."""
    prompt: dict[str, Any] = {
        "1": {"class_type": "Number", "inputs": {"value": value}},
        "2": {"class_type": "SaveText", "inputs": {"value": ["1", 0], "filename_prefix": prefix, "count": count,
                                                   "pad_bytes": pad_bytes}}}
    source = ["2", 0]
    if exit_after:
        prompt["3"] = {"class_type": "ExitOnce", "inputs": {"value": source, "delay": 0.3}}
        source = ["3", 0]
    prompt["4"] = {"class_type": "Show", "inputs": {"value": source}}
    return prompt


def loads(base: Path) -> list[tuple[int, str]]:
    path = base / "loads.log"
    if not path.exists():
        return []
    return [(int(pid), name) for pid, name in (line.split() for line in path.read_text().splitlines())]
