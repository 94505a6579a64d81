"""Which queued prompt a free worker takes: model affinity, with fairness, or plain order, or random (to compare).

A prompt's models are the model files its nodes name (combo inputs over a model folder, `sdgraph.node.ModelFiles`),
as "folder/name". A worker is taken to hold the models of the last prompt it ran (a model manager with room for
one set of models, the case where routing matters most).

Affinity: a free worker takes the oldest prompt whose models it holds. Otherwise it takes the oldest prompt that
no other worker holds the models of, or one whose warm worker will not get to it before a load here would be
done (the prompts ahead of it for that worker, times the mean run, against the mean load time): so a hot model
spreads over several workers when its queue is long. Fairness: a prompt held by no worker that has been passed
over `max_skips` times is taken by the next free worker, so a rare model is not starved by a popular one.
"""
from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from sdgraph.node import ModelFiles
from sdgraph.registry import Registry
from sdgraph.server import piecewise_json
from sdgraph.server.queue import QueueItem

POLICIES = ("affinity", "fifo", "random")
MEMORY = 4096  # prompts whose models, skips, draws are remembered; past it, only those in the window are kept
Models = frozenset[str]


def prompt_models(prompt: dict[str, Any], registry: Registry) -> Models:
    """The model files a prompt's nodes name, as "folder/name"."""
    found = set()
    for node in prompt.values():
        if not isinstance(node, dict):
            continue
        known = registry.get(str(node.get("class_type")))
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        if known is None:
            continue
        for spec in known.spec.inputs:
            value = inputs.get(spec.name)
            if isinstance(spec.choices_from, ModelFiles) and isinstance(value, str):
                found.add(f"{spec.choices_from.folder}/{value}")
    return frozenset(found)


@dataclass
class WorkerView:
    """What routing knows of one worker."""

    name: str
    held: Models = frozenset()
    busy: bool = False


@dataclass
class Estimates:
    """Running means (seconds) of a prompt's run and of the extra a cold start costs."""

    run_s: float = 1.0
    load_s: float = 1.0
    weight: float = 0.2

    def observe(self, seconds: float, cold: bool, warm_mean: float | None) -> None:
        self.run_s += self.weight * (seconds - self.run_s)
        if cold and warm_mean is not None:
            self.load_s += self.weight * (max(0.0, seconds - warm_mean) - self.load_s)


@dataclass
class Router:
    models_of: Callable[[dict[str, Any]], Models]
    policy: str = "affinity"
    max_skips: int = 8
    seed: int = 0
    workers: dict[str, WorkerView] = field(default_factory=dict)
    estimates: Estimates = field(default_factory=Estimates)
    hits: int = 0
    misses: int = 0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"routing policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        self._models: dict[str, Models] = {}
        self._skips: dict[str, int] = {}
        self._assigned: dict[str, str] = {}
        self._avoid: dict[str, str] = {}  # prompt -> the worker it was lost on
        self._rng = random.Random(self.seed)
        self._warm_mean: float | None = None
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        self.workers[name] = WorkerView(name)

    def models(self, item: QueueItem) -> Models:
        found = self._models.get(item.prompt_id)
        if found is None:
            try:
                found = self.models_of(piecewise_json.loads(item.prompt_json))
            except Exception:  # noqa: BLE001 - an unreadable prompt routes as one needing no model
                found = frozenset()
            self._models[item.prompt_id] = found
        return found

    # ---- the choice (called under the store's lock) -------------------------------------------------------

    def pick(self, name: str, window: list[QueueItem]) -> QueueItem | None:
        with self._lock:
            me = self.workers[name]
            if len(self._models) > MEMORY:  # prompts deleted while pending never finish here
                self._forget_all_but(window)
            if self._avoid and len(self.workers) > 1:
                window = [item for item in window if self._avoid.get(item.prompt_id) != name]
                if not window:
                    return None
            if self.policy == "fifo":
                return window[0]
            if self.policy == "random":
                return self._random(name, window)
            return self._affinity(me, window)

    def _forget_all_but(self, window: list[QueueItem]) -> None:
        keep = {item.prompt_id for item in window}
        for memory in (self._models, self._skips, self._assigned, self._avoid):
            for prompt_id in [pid for pid in memory if pid not in keep]:
                del memory[prompt_id]

    def _random(self, name: str, window: list[QueueItem]) -> QueueItem | None:
        for item in window:  # each prompt goes to a worker drawn at random when first seen
            owner = self._assigned.setdefault(item.prompt_id, self._rng.choice(sorted(self.workers)))
            if owner == name:
                return item
        return None

    def _affinity(self, me: WorkerView, window: list[QueueItem]) -> QueueItem | None:
        held_by = {item.prompt_id: self._holders(item, me) for item in window}
        starved = next((item for item in window if not held_by[item.prompt_id]
                        and self._skips.get(item.prompt_id, 0) >= self.max_skips), None)
        if starved is not None:
            return self._chosen(window, starved, held_by)
        for item in window:
            needed = self.models(item)
            if needed and needed <= me.held:
                return self._chosen(window, item, held_by)
        ahead: dict[str, int] = {}
        for item in window:
            holders = held_by[item.prompt_id]
            if not self.models(item) or not holders or self._wait(holders, ahead) > self.estimates.load_s:
                return self._chosen(window, item, held_by)
            for holder in holders:
                ahead[holder.name] = ahead.get(holder.name, 0) + 1
        return None

    def _holders(self, item: QueueItem, me: WorkerView) -> list[WorkerView]:
        needed = self.models(item)
        if not needed:
            return []
        return [w for w in self.workers.values() if w is not me and needed <= w.held]

    def _wait(self, holders: list[WorkerView], ahead: dict[str, int]) -> float:
        """When the soonest warm worker would start this prompt: its queue ahead, plus half a run if busy."""
        return min((ahead.get(w.name, 0) + (0.5 if w.busy else 0.0)) * self.estimates.run_s for w in holders)

    def _chosen(self, window: list[QueueItem], item: QueueItem,
                held_by: dict[str, list[WorkerView]]) -> QueueItem:
        for earlier in window:
            if earlier is item:
                break
            if not held_by[earlier.prompt_id]:  # nobody is on its way to it: it was passed over
                self._skips[earlier.prompt_id] = self._skips.get(earlier.prompt_id, 0) + 1
        return item

    def warm_counts(self, pending: list[QueueItem]) -> dict[str, int]:
        """For each worker, the pending prompts whose models it holds."""
        with self._lock:
            counts = {name: 0 for name in self.workers}
            for item in pending:
                needed = self.models(item)
                for worker in self.workers.values():
                    counts[worker.name] += bool(needed) and needed <= worker.held
            return counts

    # ---- what happened ----------------------------------------------------------------------------------

    def started(self, name: str, item: QueueItem) -> bool:
        """The worker starts the prompt; whether it already held its models (an affinity hit)."""
        with self._lock:
            me = self.workers[name]
            needed = self.models(item)
            hit = bool(needed) and needed <= me.held
            if needed:
                self.hits += hit
                self.misses += not hit
                me.held = needed
            me.busy = True
            self._skips.pop(item.prompt_id, None)
            self._assigned.pop(item.prompt_id, None)
            self._avoid.pop(item.prompt_id, None)
            return hit

    def finished(self, name: str, item: QueueItem, seconds: float | None, hit: bool) -> None:
        with self._lock:
            self.workers[name].busy = False
            needed = self._models.pop(item.prompt_id, frozenset())
            if seconds is None:
                return
            if hit or not needed:
                mean = self._warm_mean
                self._warm_mean = seconds if mean is None else mean + 0.2 * (seconds - mean)
            self.estimates.observe(seconds, cold=not hit and bool(needed), warm_mean=self._warm_mean)

    def lost(self, name: str, prompt_id: str) -> None:
        """The worker was lost running the prompt: its replacement holds nothing, and the prompt is retried on
        another worker where there is one."""
        with self._lock:
            self.workers[name].held = frozenset()
            self.workers[name].busy = False
            self._avoid[prompt_id] = name
