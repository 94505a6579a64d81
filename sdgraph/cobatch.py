"""Cross-prompt batching: several queued prompts run at once, and their model calls are merged into one batch.

A group of prompts that use the same models runs concurrently, one thread per prompt (`Executor.execute_group`).
Their batchable nodes (samplers: `Node.cobatch`) do not go to the accelerator worker one at a time: they wait in
the group's `Gang` until every other prompt of the group has reached one too (or has finished, or `wait` seconds
have passed), and then run together as one *job* on the accelerator worker, each in its own thread, so that
nothing else uses the models meanwhile. Inside a job each model call goes through the job's `Rendezvous`: once
every node still at work has a call waiting, the calls are grouped by a key the caller gives (same model, same
shapes) and each group is computed at once by one thread, whose results are handed back to the callers.

Everything else a prompt does (its noise, its conditioning, every sampler step) stays its own, computed exactly
as when it runs alone; whether merging a model call gives each caller exactly what its own call gives is the
merging function's business (see `nodes.sd.unet_merge`). The engine knows nothing of tensors.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextvars
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from sdgraph.resources import ACCELERATOR, Workers

DEFAULT_MAX_PROMPTS = 16  # prompts run as one group at most
DEFAULT_WAIT_S = 2.0  # how long a batchable node waits for the rest of its group
PATIENCE_S = 0.25  # how long a model call waits for the calls of the other nodes in its job

MergeRun = Callable[[list[Any]], list[Any]]

_current: contextvars.ContextVar["Rendezvous | None"] = contextvars.ContextVar("sdgraph_rendezvous", default=None)


def current_rendezvous() -> "Rendezvous | None":
    """The rendezvous of the job the calling thread works in; None outside cross-prompt batching."""
    return _current.get()


@dataclass
class _Call:
    key: Hashable
    payload: Any
    run: MergeRun
    arrived: float = field(default_factory=time.monotonic)
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class Rendezvous:
    """Where the concurrent works of one job meet to have their model calls computed together.

    The calls are computed by the thread that serves the rendezvous (the job's, on the accelerator worker), never
    by the callers: one thread runs every model call, as it does when prompts run one at a time, and the CPU's
    thread pool is not split between callers taking turns.
    """

    def __init__(self, participants: int, patience: float = PATIENCE_S) -> None:
        self._cond = threading.Condition()
        self._live = participants
        self._waiting: list[_Call] = []
        self.patience = patience
        self.merged_calls = 0  # calls computed as part of a group of more than one (for tests and stats)

    def call(self, key: Hashable, payload: Any, run: MergeRun) -> Any:
        """`run([payload, ...])` for this call and every waiting call of equal key, once all have arrived (or the
        others kept it waiting `patience` seconds); this call's part of the result."""
        mine = _Call(key, payload, run)
        with self._cond:
            self._waiting.append(mine)
            self._cond.notify_all()
            while not mine.done:
                self._cond.wait()
        if mine.error is not None:
            raise mine.error
        return mine.result

    def leave(self) -> None:
        """A work of the job has ended: the others no longer wait for its calls."""
        with self._cond:
            self._live -= 1
            self._cond.notify_all()

    def serve(self) -> None:
        """Compute the calls as they come due, until every work has left."""
        with self._cond:
            while self._live > 0 or self._waiting:
                batch = self._take_if_ready()
                if not batch:
                    self._cond.wait(self._timeout())
                    continue
                self._cond.release()
                try:
                    _compute(batch)
                finally:
                    self._cond.acquire()
                    self._cond.notify_all()

    def _take_if_ready(self) -> list[_Call]:
        if not self._waiting:
            return []
        stale = time.monotonic() - self._waiting[0].arrived >= self.patience
        if len(self._waiting) < self._live and not stale:
            return []
        batch, self._waiting = self._waiting, []
        self.merged_calls += sum(len(group) for group in _grouped(batch) if len(group) > 1)
        return batch

    def _timeout(self) -> float | None:
        if not self._waiting:
            return None
        return max(0.0, self.patience - (time.monotonic() - self._waiting[0].arrived)) + 0.001


def _grouped(calls: list[_Call]) -> list[list[_Call]]:
    groups: dict[Hashable, list[_Call]] = {}
    for call in calls:
        groups.setdefault(call.key, []).append(call)
    return list(groups.values())


def _compute(batch: list[_Call]) -> None:
    """Each group's run, its results (or its error) handed to its calls."""
    for group in _grouped(batch):
        try:
            results = group[0].run([call.payload for call in group])
            if len(results) != len(group):
                raise RuntimeError(f"a merged model call gave {len(results)} results for {len(group)} calls")
            for call, result in zip(group, results):
                call.result = result
        except BaseException as exc:  # noqa: BLE001 - each caller gets the failure in its own thread
            for call in group:
                call.error = exc
        for call in group:
            call.done = True


@dataclass
class _Work:
    member: Hashable
    work: Callable[[], Any]
    future: concurrent.futures.Future
    arrived: float = field(default_factory=time.monotonic)


class Gang:
    """The batchable node works of a group of concurrent prompt runs (its *members*), launched together.

    A job starts once no member is busy elsewhere — each live member has a work waiting, or one in the job
    already running — or `wait` seconds after the oldest work arrived. Jobs run on the accelerator worker, so
    they take turns with every other node that uses a model.
    """

    def __init__(self, workers: Workers, members: Sequence[Hashable], wait: float = DEFAULT_WAIT_S,
                 patience: float = PATIENCE_S) -> None:
        self.workers = workers
        self.wait = wait
        self.patience = patience
        self._cond = threading.Condition()
        self._live = set(members)
        self._pending: list[_Work] = []
        self._in_job: dict[Hashable, int] = {}
        self._closed = False
        self.jobs: list[int] = []  # the number of works in each job launched (for tests and stats)
        self._thread = threading.Thread(target=self._launcher, name="sdgraph-gang", daemon=True)
        self._thread.start()

    def submit(self, member: Hashable, work: Callable[[], Any]) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the group's runs have ended")
            self._pending.append(_Work(member, work, future))
            self._cond.notify_all()
        return future

    def leave(self, member: Hashable) -> None:
        """The member's run has ended: the group no longer waits for it."""
        with self._cond:
            self._live.discard(member)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    # ---- launching ------------------------------------------------------------------------------------------

    def _launcher(self) -> None:
        while True:
            with self._cond:
                works = self._next_job()
                if works is None:
                    return
            self.workers.submit(ACCELERATOR, self._job, works)

    def _next_job(self) -> list[_Work] | None:
        """Wait (holding the lock) until a job is due; its works, or None once closed with nothing left."""
        while True:
            self._pending = [w for w in self._pending if not w.future.cancelled()]
            if self._pending and (self._closed or self._ready() or self._overdue() <= 0):
                works = [w for w in self._pending if w.future.set_running_or_notify_cancel()]
                self._pending = []
                if not works:
                    continue
                for w in works:
                    self._in_job[w.member] = self._in_job.get(w.member, 0) + 1
                self.jobs.append(len(works))
                return works
            if self._closed:
                return None
            self._cond.wait(self._overdue() if self._pending else None)

    def _ready(self) -> bool:
        waiting = {w.member for w in self._pending}
        return all(m in waiting or self._in_job.get(m, 0) for m in self._live)

    def _overdue(self) -> float:
        return self.wait - (time.monotonic() - self._pending[0].arrived)

    def _job(self, works: list[_Work]) -> None:
        rendezvous = Rendezvous(len(works), self.patience)
        threads = [threading.Thread(target=self._run_work, args=(rendezvous, w), name="sdgraph-cobatch",
                                    daemon=True) for w in works]
        for thread in threads:
            thread.start()
        rendezvous.serve()
        for thread in threads:
            thread.join()

    def _run_work(self, rendezvous: Rendezvous, work: _Work) -> None:
        token = _current.set(rendezvous)
        try:
            work.future.set_result(work.work())
        except BaseException as exc:  # noqa: BLE001 - the node's run sees it in its own thread
            work.future.set_exception(exc)
        finally:
            _current.reset(token)
            rendezvous.leave()
            with self._cond:
                self._in_job[work.member] -= 1
                self._cond.notify_all()


# ---- command-line flags (`sdgraph serve`) -------------------------------------------------------------------

def add_batching_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-max", type=int, default=DEFAULT_MAX_PROMPTS, metavar="N",
                        help="queued prompts that use the same models run as one group of up to N, their sampler "
                             f"calls merged into one batch, each result as if run alone (default {DEFAULT_MAX_PROMPTS}; "
                             "1 turns it off)")
    parser.add_argument("--batch-wait", type=float, default=DEFAULT_WAIT_S, metavar="SECONDS",
                        help="how long a prompt's sampler waits for the rest of its group before it starts without "
                             f"them (default {DEFAULT_WAIT_S:g})")


def batching_options(args: argparse.Namespace) -> dict[str, object]:
    """The RuntimeOptions fields these flags set."""
    return {"batch_max": max(1, args.batch_max), "batch_wait": max(0.0, args.batch_wait)}
