"""Run a prepared prompt: only what the output nodes need, in topological order, reusing cached outputs.

Events go to a listener as `(type, data)` with the ecosystem's WebSocket message names and payloads:
execution_start, execution_cached, executing, progress, executed, execution_success, execution_error,
execution_interrupted, and `preview` (a latent preview image, for faces that can show one).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from sdgraph.cache import OutputCache
from sdgraph.cobatch import DEFAULT_MAX_PROMPTS, DEFAULT_WAIT_S, Gang
from sdgraph.collector import collector_paused
from sdgraph.context import InterruptFlag, Services
from sdgraph.disk_cache import DiskCache
from sdgraph.resources import Workers
from sdgraph.prepare import PreparedPrompt, prepare
from sdgraph.registry import Registry
from sdgraph.run import PromptRun, engine_state_frozen as _engine_state_frozen
from sdgraph.run_result import NodeError, RunResult, error_payload  # noqa: F401 - the engine's public names
from sdgraph.workflow import Workflow

log = logging.getLogger("sdgraph")

Listener = Callable[[str, dict[str, Any]], None]
Recorder = Callable[["RunResult"], None]

# The events a run's history keeps, as `[event, data]` pairs (the ecosystem's `status.messages`).
HISTORY_EVENTS = frozenset({"execution_start", "execution_cached", "execution_success", "execution_error",
                            "execution_interrupted"})


def _ignore(event: str, data: dict[str, Any]) -> None:
    pass


@dataclass
class Member:
    """One prompt of a group run by `Executor.execute_group`: what `Executor.execute` takes for it."""

    prompt: PreparedPrompt
    prompt_id: str
    listener: Listener | None = None
    extra_data: dict[str, Any] | None = None
    record: Recorder | None = None


class Executor:
    """Prepares and runs prompts against a registry; keeps the output cache and services across runs.

    The prompt lifecycle is the engine's: `prepare` (parse, validate, plan; no side effects, safe in any thread),
    then `execute`, which runs one prepared prompt at a time, hands the outcome to the caller's `record` (a
    history, say) and only then announces the end with `executing: null`.
    """

    def __init__(self, registry: Registry, services: Services | None = None, cache: OutputCache | None = None,
                 disk_cache: DiskCache | None = None, *, parallel: bool = True,
                 batch_max: int = DEFAULT_MAX_PROMPTS, batch_wait: float = DEFAULT_WAIT_S):
        self.registry = registry
        self.services = services or Services()
        self.cache = cache if cache is not None else OutputCache()
        self.disk_cache = disk_cache  # outputs kept across processes (sdgraph.disk_cache); None: memory only
        self.interrupt_flag = InterruptFlag()
        self.parallel = parallel  # nodes on different resources overlap (sdgraph.resources); False: one at a time
        self.batch_max = batch_max if parallel else 1  # prompts run at once as one group (sdgraph.cobatch)
        self.batch_wait = batch_wait  # seconds a batchable node waits for the rest of its group
        self.workers = Workers()
        self.instances: dict[str, Any] = {}  # node id -> its node object (ComfyUI keeps one per node too)
        self._lock = threading.Lock()
        self._flags: dict[str, InterruptFlag] = {}  # prompt id -> the flag of its run in progress
        self._early: set[str] = set()  # prompts interrupted before their run began
        self.last_group_jobs: list[int] = []  # works per batched job of the last group run (for stats and tests)

    def interrupt(self, prompt_id: str | None = None) -> None:
        """Stop the runs in progress at their next check (or, if none is running, the next run to start); with a
        prompt id, only that prompt's run (now, or when it begins)."""
        if prompt_id is None:
            self.interrupt_flag.set()
            return
        flag = self._flags.get(prompt_id)
        if flag is not None:
            flag.set()
        elif len(self._early) < 1024:
            self._early.add(prompt_id)

    def prepare(self, source: Workflow | Any) -> PreparedPrompt:
        with collector_paused():
            return prepare(source, self.registry, self.services.dirs)

    def run(self, source: Workflow | Any, **options: Any) -> RunResult:
        """Prepare and execute in one call (see `execute` for the options)."""
        return self.execute(self.prepare(source), **options)

    def execute(self, prompt: PreparedPrompt, *, prompt_id: str | None = None, listener: Listener | None = None,
                extra_data: dict[str, Any] | None = None, record: Recorder | None = None) -> RunResult:
        """Run a prepared prompt. Never raises for the prompt's failure, nor for the recorder's: see RunResult.

        An invalid prompt ends with `execution_error` carrying its node errors. If `record` raises, the run ends
        as an error (and `record` is given that error result once more), so no prompt is left unfinished.
        """
        member = Member(prompt, prompt_id or str(uuid.uuid4()), listener, extra_data, record)
        with self._lock:
            return self._lifecycle(member, self.interrupt_flag, None)

    def execute_group(self, members: Sequence[Member]) -> list[RunResult]:
        """Run several prepared prompts at once, each as `execute` would, merging their batchable model calls
        (`sdgraph.cobatch`); each prompt's results, events and record are its own."""
        if len(members) == 1 or not self.parallel:
            return [self.execute(m.prompt, prompt_id=m.prompt_id, listener=m.listener, extra_data=m.extra_data,
                                 record=m.record) for m in members]
        results: list[RunResult | None] = [None] * len(members)
        with self._lock:
            gangs = self._gangs(members)

            def run(i: int, member: Member) -> None:
                gang = gangs.get(member.prompt_id)
                try:
                    results[i] = self._lifecycle(member, InterruptFlag(parent=self.interrupt_flag), gang)
                finally:
                    if gang is not None:
                        gang.leave(member.prompt_id)

            threads = [threading.Thread(target=run, args=(i, m), name=f"sdgraph-prompt-{i}", daemon=True)
                       for i, m in enumerate(members)]
            with _engine_state_frozen():
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            distinct = list({id(gang): gang for gang in gangs.values()}.values())
            for gang in distinct:
                gang.close()
            self.interrupt_flag.clear()
            self.last_group_jobs = [n for gang in distinct for n in gang.jobs]
        return [r for r in results if r is not None]

    def _gangs(self, members: Sequence[Member]) -> dict[str, Gang]:
        """One gang per batch key: only prompts sampling with the very same models share jobs (a model patched
        otherwise, by another LoRA say, must never be in use by two of them at once)."""
        by_key: dict[frozenset[str], list[str]] = {}
        for member in members:
            key = self.batch_key(member.prompt)
            if key is not None:
                by_key.setdefault(key, []).append(member.prompt_id)
        return {prompt_id: gang for ids in by_key.values()
                for gang in [Gang(self.workers, ids, wait=self.batch_wait)] for prompt_id in ids}

    def batch_key(self, prompt: PreparedPrompt) -> frozenset[str] | None:
        """Prompts of equal key may run as one group (`execute_group`): each has a batchable node, and those use
        the same models (the cache keys of the nearest nodes upstream that make a MODEL). None: run it alone."""
        if self.batch_max <= 1 or not prompt.ok or prompt.workflow is None:
            return None
        batchable = [node_id for node_id in prompt.plan if prompt.nodes[node_id].node.cobatch]
        if not batchable:
            return None
        try:
            run = PromptRun(self, prompt, "batch-key", _ignore, {})
            return frozenset(run.key_of(node_id) for node_id in _model_sources(prompt, batchable))
        except Exception:  # noqa: BLE001 - a node whose key cannot be worked out fails in its own run, alone
            log.debug("no batch key for a prompt", exc_info=True)
            return None

    def _lifecycle(self, member: Member, flag: InterruptFlag, gang: Gang | None) -> RunResult:
        prompt_id = member.prompt_id
        start = time.perf_counter()
        emit = _HistoryListener(member.listener or _ignore)
        self._flags[prompt_id] = flag
        if prompt_id in self._early:
            self._early.discard(prompt_id)
            flag.set()
        try:
            result = self._outcome(member.prompt, prompt_id, emit, _extra_data(member.prompt, member.extra_data),
                                   flag, gang)
        finally:
            self._flags.pop(prompt_id, None)
            if gang is None:
                flag.clear()  # at the end, not the start: an interrupt sent just before counts
        result.messages = emit.messages
        result.seconds = time.perf_counter() - start
        if member.record is not None:
            result = _recorded(result, member.record, emit)
        # As in the ecosystem's protocol, "executing" with no node closes every run, whatever its outcome.
        emit("executing", {"node": None, "display_node": None, "prompt_id": prompt_id})
        return result

    def _outcome(self, prompt: PreparedPrompt, prompt_id: str, emit: Listener, extra_data: dict[str, Any],
                 flag: InterruptFlag, gang: Gang | None) -> RunResult:
        if not prompt.ok or prompt.workflow is None:
            result = RunResult(prompt_id, "invalid", node_errors=prompt.node_errors)
            result.error = error_payload(prompt_id, message=_invalid_message(prompt.error),
                                         exception_type=str((prompt.error or {}).get("type", "invalid_prompt")),
                                         node_errors=prompt.node_errors)
            emit("execution_error", result.error)
            return result
        try:
            with collector_paused(), self.services.prompt_scope():
                return PromptRun(self, prompt, prompt_id, emit, extra_data, flag, gang).execute()
        except Exception as exc:  # noqa: BLE001 - an engine bug becomes this prompt's error, not the caller's
            log.error("engine failure in prompt %s", prompt_id, exc_info=exc)
            result = RunResult(prompt_id, "error", error=error_payload(prompt_id, exc))
            emit("execution_error", result.error)
            return result


def _model_sources(prompt: PreparedPrompt, starts: list[str]) -> set[str]:
    """The nodes nearest upstream of `starts` that output a MODEL (the models those nodes sample with)."""
    found: set[str] = set()
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        for source, _ in prompt.nodes[stack.pop()].links.values():
            if source in seen:
                continue
            seen.add(source)
            if any(out.type == "MODEL" for out in prompt.nodes[source].node.spec.outputs):
                found.add(source)
            else:
                stack.append(source)
    return found


class _HistoryListener:
    """Passes every event on, keeping those the history records."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.messages: list[list[Any]] = []

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event in HISTORY_EVENTS:
            self.messages.append([event, data])
        self.listener(event, data)


def _recorded(result: RunResult, record: Recorder, emit: Listener) -> RunResult:
    """Record the result; a failure to record turns it into an error result, recorded in its place."""
    try:
        record(result)
        return result
    except Exception as exc:  # noqa: BLE001 - a full disk or an unserialisable value must not leave a zombie
        log.error("could not record prompt %s", result.prompt_id, exc_info=exc)
        failed = RunResult(result.prompt_id, "error", executed=result.executed, cached=result.cached,
                           seconds=result.seconds, messages=result.messages)
        failed.error = error_payload(result.prompt_id, exc, executed=result.executed,
                                     message=f"the prompt ran, but its result could not be recorded: "
                                             f"{type(exc).__name__}: {exc}")
        emit("execution_error", failed.error)
    try:
        record(failed)
    except Exception:  # noqa: BLE001 - nothing more to be done; the recorder has released the prompt
        log.exception("could not record the failure of prompt %s either", result.prompt_id)
    return failed


def _extra_data(prompt: PreparedPrompt, extra_data: dict[str, Any] | None) -> dict[str, Any]:
    """The run's extra data; a workflow file's editor layout travels as `extra_pnginfo` unless one is given."""
    extra = dict(extra_data or {})
    layout = prompt.workflow.layout if prompt.workflow is not None else None
    if layout and "extra_pnginfo" not in extra:
        extra["extra_pnginfo"] = {"workflow": layout}
    return extra


def _invalid_message(error: dict[str, Any] | None) -> str:
    error = error or {}
    return f"{error.get('message', 'invalid prompt')}: {error.get('details', '')}".rstrip(": ")


