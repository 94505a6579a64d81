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
from typing import Any, Callable

from sdgraph.cache import OutputCache
from sdgraph.collector import collector_paused
from sdgraph.context import InterruptFlag, Services
from sdgraph.disk_cache import DiskCache
from sdgraph.resources import Workers
from sdgraph.prepare import PreparedPrompt, prepare
from sdgraph.registry import Registry
from sdgraph.run import PromptRun
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


class Executor:
    """Prepares and runs prompts against a registry; keeps the output cache and services across runs.

    The prompt lifecycle is the engine's: `prepare` (parse, validate, plan; no side effects, safe in any thread),
    then `execute`, which runs one prepared prompt at a time, hands the outcome to the caller's `record` (a
    history, say) and only then announces the end with `executing: null`.
    """

    def __init__(self, registry: Registry, services: Services | None = None, cache: OutputCache | None = None,
                 disk_cache: DiskCache | None = None, *, parallel: bool = True):
        self.registry = registry
        self.services = services or Services()
        self.cache = cache if cache is not None else OutputCache()
        self.disk_cache = disk_cache  # outputs kept across processes (sdgraph.disk_cache); None: memory only
        self.interrupt_flag = InterruptFlag()
        self.parallel = parallel  # nodes on different resources overlap (sdgraph.resources); False: one at a time
        self.workers = Workers()
        self.instances: dict[str, Any] = {}  # node id -> its node object (ComfyUI keeps one per node too)
        self._lock = threading.Lock()

    def interrupt(self) -> None:
        """Stop the run in progress at its next check (or, if none is running, the next run to start)."""
        self.interrupt_flag.set()

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
        prompt_id = prompt_id or str(uuid.uuid4())
        start = time.perf_counter()
        with self._lock:
            emit = _HistoryListener(listener or _ignore)
            try:
                result = self._outcome(prompt, prompt_id, emit, _extra_data(prompt, extra_data))
            finally:
                self.interrupt_flag.clear()  # at the end, not the start: an interrupt sent just before counts
            result.messages = emit.messages
            result.seconds = time.perf_counter() - start
            if record is not None:
                result = _recorded(result, record, emit)
            # As in the ecosystem's protocol, "executing" with no node closes every run, whatever its outcome.
            emit("executing", {"node": None, "display_node": None, "prompt_id": prompt_id})
        return result

    def _outcome(self, prompt: PreparedPrompt, prompt_id: str, emit: Listener,
                 extra_data: dict[str, Any]) -> RunResult:
        if not prompt.ok or prompt.workflow is None:
            result = RunResult(prompt_id, "invalid", node_errors=prompt.node_errors)
            result.error = error_payload(prompt_id, message=_invalid_message(prompt.error),
                                         exception_type=str((prompt.error or {}).get("type", "invalid_prompt")),
                                         node_errors=prompt.node_errors)
            emit("execution_error", result.error)
            return result
        try:
            with collector_paused(), self.services.prompt_scope():
                return PromptRun(self, prompt, prompt_id, emit, extra_data).execute()
        except Exception as exc:  # noqa: BLE001 - an engine bug becomes this prompt's error, not the caller's
            log.error("engine failure in prompt %s", prompt_id, exc_info=exc)
            result = RunResult(prompt_id, "error", error=error_payload(prompt_id, exc))
            emit("execution_error", result.error)
            return result


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


