"""The order a prompt's nodes run in, decided while they run.

A static topological order cannot express what nodes may do at run time: ask for a lazy input only after seeing
the others, add nodes (graph expansion), or wait on an `async` call. `Schedule` keeps the nodes still to run,
how many unfinished things each waits for, and hands out the ready node of lowest rank. Ranks are the static
topological position for the workflow's own nodes, so a prompt without lazy inputs, expansion or async nodes runs
in exactly the order of its plan.

The node handed out by `pop` is *staged*: only it gains new waits (`wait_for`, `hold`) until it is `done` or
`requeue`d, which is all a running node can cause.

Most prompts never do any of that, so a schedule started with `follow` just walks the plan: in rank order every
node's sources come before it, so the next node of the plan is always the ready node of lowest rank. The first
thing a plan cannot express (a wait, a hold, a requeue, a node added) turns the rest into the graph of waits.
"""
from __future__ import annotations

import heapq
from typing import Callable, Iterable

Rank = tuple[int, ...]
Needs = Callable[[str], Iterable[str]]  # the sources a node must wait for: unresolved and not lazy


class Schedule:
    def __init__(self, rank: Callable[[str], Rank], needs: Needs) -> None:
        self._rank = rank
        self._needs = needs
        self._waiting: dict[str, int] = {}  # pending node -> unfinished sources and holds it waits for
        self._dependents: dict[str, set[str]] = {}  # pending node -> pending nodes waiting for it
        self._ready: list[tuple[Rank, str]] = []
        self._holds = 0
        self.staged: str | None = None
        self._plan: list[str] | None = None  # while the plan is followed: the nodes to run, in rank order
        self._next = 0  # the plan's next node

    def __bool__(self) -> bool:
        if self._plan is not None:
            return self._next < len(self._plan)
        return bool(self._waiting)

    def follow(self, plan: list[str]) -> None:
        """Run exactly these nodes, given in increasing rank with each one's sources (as `needs` tells them)
        before it. Only for an empty schedule."""
        assert not self._waiting and self._plan is None
        self._plan, self._next = plan, 0

    @property
    def held(self) -> bool:
        """Whether some node waits on something outside the graph (an async call)."""
        return self._holds > 0

    def add(self, node_id: str) -> None:
        """Make `node_id` run, with whatever it needs that is not resolved yet."""
        self._leave_plan()
        stack = [node_id]
        added: list[str] = []
        edges: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self._waiting:
                continue
            added.append(current)
            self._waiting[current] = 0
            self._dependents[current] = set()
            for source in self._needs(current):
                edges.append((source, current))
                stack.append(source)
        for source, target in edges:
            self._link(source, target)
        for current in added:
            if self._waiting[current] == 0:
                heapq.heappush(self._ready, (self._rank(current), current))

    def wait_for(self, source: str) -> None:
        """The staged node also needs `source` (a lazy input it asked for, an expansion's output)."""
        assert self.staged is not None
        self.add(source)  # which leaves the plan, if it is still followed
        self._link(source, self.staged)

    def hold(self) -> Callable[[], None]:
        """The staged node waits on something outside the graph; call the result once that is over."""
        node_id = self.staged
        assert node_id is not None
        self._leave_plan()
        self._waiting[node_id] += 1
        self._holds += 1

        def release() -> None:
            self._holds -= 1
            self._decrement(node_id)

        return release

    def pop(self) -> str | None:
        """Stage the ready node of lowest rank; None if none is ready (everything waits, or nothing is left)."""
        assert self.staged is None
        if self._plan is not None:
            self.staged = self._plan[self._next]
            return self.staged
        if not self._ready:
            return None
        _, node_id = heapq.heappop(self._ready)
        self.staged = node_id
        return node_id

    def done(self) -> None:
        """The staged node has its outputs: release the nodes waiting for it."""
        node_id = self.staged
        assert node_id is not None
        self.staged = None
        if self._plan is not None:
            self._next += 1
            return
        del self._waiting[node_id]
        for dependent in self._dependents.pop(node_id):
            self._decrement(dependent)

    def requeue(self) -> None:
        """The staged node goes back to wait for what it now needs (or is ready again at once)."""
        node_id = self.staged
        assert node_id is not None
        self._leave_plan()
        self.staged = None
        if self._waiting[node_id] == 0:
            heapq.heappush(self._ready, (self._rank(node_id), node_id))

    def stuck(self) -> list[str]:
        """The nodes left when nothing is ready and nothing is held: they wait on each other (a cycle)."""
        return sorted(self._waiting, key=self._rank)

    def _leave_plan(self) -> None:
        """From now on, the graph of waits: the rest of the plan (the staged node, if any, ready but staged)."""
        if self._plan is None:
            return
        rest, self._plan = self._plan[self._next:], None
        if self.staged is not None:
            self._waiting[self.staged] = 0
            self._dependents[self.staged] = set()
        for node_id in rest:
            self.add(node_id)

    def _link(self, source: str, target: str) -> None:
        if source in self._waiting and target not in self._dependents[source]:
            self._dependents[source].add(target)
            self._waiting[target] += 1

    def _decrement(self, node_id: str) -> None:
        self._waiting[node_id] -= 1
        if self._waiting[node_id] == 0 and node_id != self.staged:
            heapq.heappush(self._ready, (self._rank(node_id), node_id))
