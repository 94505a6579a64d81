"""What a node runs on, and the workers that let nodes on different resources overlap.

- `accelerator`: the GPU (or, without one, the device models run on): nodes that take or make a model (MODEL,
  CLIP, VAE, CONTROL_NET, ...) sample, encode, decode and load. One worker thread, so the device is never
  oversubscribed, and the model manager sees one user at a time.
- `io`: nodes that mostly wait on files (a node may declare it): a small pool.
- `cpu`: everything else, run in the executor's own thread as it schedules, in step with the rest; while a node is
  at work on another resource, on one CPU-side worker thread instead, so the executor's thread stays free to hand
  the accelerator its next node the moment it is done.

A native node declares `resource = "io"` (or any of these); otherwise its inputs and outputs decide. With the
executor's `parallel` off (`--sequential`), every node runs in the executor's thread, one at a time.
"""
from __future__ import annotations

import concurrent.futures
import threading
from typing import Any, Callable

ACCELERATOR, IO, CPU = "accelerator", "io", "cpu"
RESOURCES = (ACCELERATOR, IO, CPU)
CPU_SIDE = "cpu-side"  # the worker CPU nodes run on while others work (one thread: they still run one at a time)
# socket types whose values are models (or hold one, as a GUIDER does): a node taking or making one works on the
# accelerator
MODEL_TYPES = frozenset({"MODEL", "CLIP", "VAE", "CONTROL_NET", "CLIP_VISION", "STYLE_MODEL", "GLIGEN", "GUIDER",
                         "UPSCALE_MODEL", "HYPERNETWORK", "LATENT_UPSCALE_MODEL"})
IO_WORKERS = 2


def resource_of(node_def: Any) -> str:
    """The resource a node runs on: its declaration, else accelerator if it takes or makes a model, else cpu."""
    declared = getattr(node_def, "resource", None)
    if declared in RESOURCES:
        return declared
    spec = node_def.spec
    if any(s.type in MODEL_TYPES for s in spec.inputs) or any(o.type in MODEL_TYPES for o in spec.outputs):
        return ACCELERATOR
    return CPU


class Workers:
    """One thread for the accelerator, a few for I/O; started on first use, for the executor's lifetime."""

    def __init__(self) -> None:
        self._pools: dict[str, concurrent.futures.ThreadPoolExecutor] = {}
        self._lock = threading.Lock()

    def submit(self, resource: str, work: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        with self._lock:
            pool = self._pools.get(resource)
            if pool is None:
                size = IO_WORKERS if resource == IO else 1
                pool = self._pools[resource] = concurrent.futures.ThreadPoolExecutor(
                    size, thread_name_prefix=f"sdgraph-{resource}")
        return pool.submit(work, *args)

    def shutdown(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.shutdown(wait=True)
            self._pools.clear()
