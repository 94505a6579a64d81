"""One prompt's execution: what runs when, each node's call, expansion, async calls, events and errors."""
from __future__ import annotations

import concurrent.futures
import gc
import threading
import time
from pathlib import Path
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

from sdgraph.cache import CachedOutput
from sdgraph.collector import collector_resumed
from sdgraph.cobatch import Gang
from sdgraph.context import InterruptFlag, Interrupted, NodeContext
from sdgraph.disk_cache import entry_key
from sdgraph.expansion import DynamicPrompt, ExpansionError, is_plain, prepare_expansion
from sdgraph.invoke import (Future, Outcome, add_to_slots, call_batches, gather, hidden_value, input_batches,
                            value_digest)
from sdgraph.node import ExecutionBlocker, ModelFiles
from sdgraph.prepare import PreparedPrompt
from sdgraph.run_result import NodeError, RunResult, _now_ms, _qualified_name, error_payload
from sdgraph.resources import ACCELERATOR, CPU, CPU_SIDE, resource_of
from sdgraph.schedule import Schedule
from sdgraph.signature import always_changes, node_signature
from sdgraph.validate import PreparedNode
from sdgraph.workflow import is_link

if TYPE_CHECKING:
    from sdgraph.execute import Executor

Listener = Callable[[str, dict[str, Any]], None]

REFREEZE_EVERY = 1024  # nodes between moves of what the run holds out of the collector's sight
ASYNC_POLL_S = 0.05  # how often a run that waits on async calls looks for an interrupt


class PromptRun:
    """The state of one prompt's execution: the nodes still to run (`Schedule`), their values and cache keys.

    Nodes run in the order of the plan unless what they do at run time says otherwise: a lazy input asked for,
    an expansion adding nodes, an async call awaited while other nodes run.
    """

    def __init__(self, executor: "Executor", prompt: PreparedPrompt, prompt_id: str, emit: Listener,
                 extra_data: dict[str, Any], flag: InterruptFlag | None = None, gang: Gang | None = None) -> None:
        self.executor = executor
        self.flag = flag or executor.interrupt_flag
        self.gang = gang  # where batchable nodes go when the run is one of a group (sdgraph.cobatch)
        self.cache = executor.cache
        self.disk = executor.disk_cache
        self._disk_keys: dict[str, str | None] = {}
        self._volatile: set[str] = set()  # nodes whose key is new each run (not idempotent, NaN fingerprint)
        self._spent: dict[str, float] = {}  # seconds each node's own calls took (expanded ones: with their nodes)
        self.prompt = prompt
        self.workflow = prompt.workflow
        self.nodes: dict[str, PreparedNode] = dict(prompt.nodes)  # grows with expansions
        self.prompt_id = prompt_id
        self.emit = _serialised(emit)  # async nodes report progress from the engine loop's thread
        self.block_error = _serialised(getattr(emit, "listener", emit))  # an event the history does not keep
        self.extra_data = extra_data
        self.values: dict[str, tuple[list[Any], ...]] = {}
        self.keys: dict[str, str] = {}
        self.result = RunResult(prompt_id, "success")
        self.api_prompt: dict[str, Any] | None = None
        self.dynprompt = DynamicPrompt(self._api_prompt)
        self._digests: dict[str, str] = {}
        self._order = {node_id: i for i, node_id in enumerate(prompt.report.order)}
        self._ranks: dict[str, tuple[int, ...]] = {}
        self._input_flags: dict[str, _InputFlags] = {}  # per class
        self._node_flags: dict[str, _InputFlags] = {}  # per node id (the same objects)
        self._expanded: dict[str, tuple[list[Any], dict[str, Any] | None]] = {}
        self._awaiting: dict[str, _Awaiting] = {}
        self._new_nodes = 0
        self._cached_ids: set[str] = set()

    def execute(self) -> RunResult:
        self.emit("execution_start", {"prompt_id": self.prompt_id, "timestamp": _now_ms()})
        schedule = Schedule(self._rank, self._needs)
        try:
            plan = self.prompt.plan
            self._sign(plan)
            cached = [node_id for node_id in plan if self._cached(node_id)]
            self.result.cached = cached
            self._cached_ids = set(cached)
            self.emit("execution_cached", {"nodes": cached, "prompt_id": self.prompt_id, "timestamp": _now_ms()})
            to_run = self._to_run(plan)
            if to_run is not None:
                schedule.follow(to_run)
            else:
                for node_id in self.prompt.outputs:
                    schedule.add(node_id)
            with engine_state_frozen():
                self._drain(schedule)
        except Interrupted:
            self._interrupted(schedule.staged)
        except NodeError as exc:
            self._failed(exc)
        else:
            self.emit("execution_success", {"prompt_id": self.prompt_id, "timestamp": _now_ms()})
        finally:
            if any(waiting.on_worker for waiting in self._awaiting.values()):
                self.flag.set()  # the run is over: nodes still at work stop at their next check
            for waiting in self._awaiting.values():
                waiting.cancel()
        return self.result

    def _drain(self, schedule: Schedule) -> None:
        steps = 0
        while schedule:
            if self._awaiting:
                self._release_finished()  # so a node waiting on a finished worker is ready again at once
            node_id = schedule.pop()
            if node_id is None:
                if not schedule.held:
                    raise self._cycle(schedule)
                self._await_some()
                continue
            self._step(schedule, node_id)
            steps += 1
            if steps % REFREEZE_EVERY == 0:
                gc.freeze()  # the outputs kept so far too, or each full collection walks them all again

    # ---- what runs when ---------------------------------------------------------------------------------

    def _rank(self, node_id: str) -> tuple[int, ...]:
        rank = self._ranks.get(node_id)
        if rank is None:
            node = self.nodes[node_id]
            first = -1 if self._starts_early(node, self._flags(node)) else 0
            rank = self._ranks[node_id] = (first, self._order[node_id])
        return rank

    def _to_run(self, plan: list[str]) -> list[str] | None:
        """The nodes of the plan the outputs need, as `Schedule.add` would find them (not those only cached
        nodes feed, nor the sources of lazy inputs), in the plan's order; None if that cannot be their order,
        because some of them start early."""
        needed = set(self.prompt.outputs)
        cached = self._cached_ids
        for node_id in reversed(plan):
            if node_id not in needed:
                continue
            node = self.nodes[node_id]
            flags = self._flags(node)
            if self._starts_early(node, flags):
                return None
            if node_id not in cached:
                lazy = flags.lazy
                needed.update([src for name, (src, _) in node.links.items() if name not in lazy and src not in cached])
        return [node_id for node_id in plan if node_id in needed]

    def _starts_early(self, node: PreparedNode, flags: _InputFlags) -> bool:
        """Started before the nodes of lower rank and awaited while they run: async, or on another resource."""
        return node.node.is_async or (self.executor.parallel and flags.resource != CPU)

    def _needs(self, node_id: str) -> list[str]:
        """The sources a node waits for before it runs: none if its output is cached, else its unresolved,
        eager (not lazy) links."""
        values = self.values
        if self._cached(node_id):
            return []
        node = self.nodes[node_id]
        lazy = self._flags(node).lazy
        return [src for name, (src, _) in node.links.items()
                if name not in lazy and src not in values and not self._cached(src)]

    def _flags(self, node: PreparedNode) -> _InputFlags:
        found = self._node_flags.get(node.node_id)
        if found is None:
            found = self._node_flags[node.node_id] = self._class_flags(node)
        return found

    def _class_flags(self, node: PreparedNode) -> _InputFlags:
        class_type = node.node.class_type
        found = self._input_flags.get(class_type)
        if found is None:
            inputs = node.node.spec.inputs
            found = self._input_flags[class_type] = _InputFlags(
                frozenset(s.name for s in inputs if s.lazy), frozenset(s.name for s in inputs if s.raw_link),
                tuple((s.name, s.choices_from.folder) for s in inputs if isinstance(s.choices_from, ModelFiles)),
                resource_of(node.node))
        return found

    def _cached(self, node_id: str) -> bool:
        """Whether the node's output is in the memory cache or on disk."""
        if self._key(node_id) in self.cache:
            return True
        if self.disk is None:
            return False
        disk_key = self._disk_key(node_id)
        return disk_key is not None and disk_key in self.disk

    def _hit(self, node_id: str) -> CachedOutput | None:
        """The node's cached output (from memory, or from disk into memory), or None."""
        key = self.keys.get(node_id) or self._key(node_id)
        hit = self.cache.get(key, node_id)
        if hit is None and self.disk is not None and (disk_key := self._disk_key(node_id)) is not None:
            found = self.disk.get(disk_key)
            if found is not None:
                hit = CachedOutput(*found)
                self.cache.put(key, hit, node_id)
        return hit

    def _disk_key(self, node_id: str) -> str | None:
        """The node's key on disk; None for output nodes, whose outputs are never written there."""
        if node_id not in self._disk_keys:
            node = self.nodes[node_id].node
            volatile = node.spec.output_node or node_id in self._volatile
            self._disk_keys[node_id] = None if volatile else entry_key(self._key(node_id), node.cls)
        return self._disk_keys[node_id]

    def _values_of(self, node_id: str) -> tuple[list[Any], ...] | None:
        found = self.values.get(node_id)
        if found is None:
            hit = self._hit(node_id)
            if hit is not None:
                found = self.values[node_id] = hit.values
        return found

    # ---- one node -----------------------------------------------------------------------------------------

    def _step(self, schedule: Schedule, node_id: str) -> None:
        self.flag.check()
        node = self.nodes[node_id]
        if node_id in self._awaiting:
            waiting = self._awaiting.pop(node_id)
            done = self._guarded(node, waiting.results)
            if waiting.on_worker:
                return self._act(schedule, node, done[0])
            return self._finish(schedule, node, self._guarded(node, lambda: gather(node, done)))
        if node_id in self._expanded:
            return self._collect(schedule, node)
        hit = self._hit(node_id)
        if hit is not None:
            self.values[node_id] = hit.values
            if self.gang is not None and node_id not in self._cached_ids and node_id not in self.dynprompt.parents:
                self._cached_late(node_id)
            if hit.ui:
                self._executed(node_id, hit.ui)
            return schedule.done()
        flags = self._node_flags.get(node_id) or self._flags(node)
        inputs, missing = self._inputs(node, flags)
        if missing and self._wait(schedule, node, [name for name in missing if name not in flags.lazy]):
            return None  # an eager source is gone from the cache since the node was scheduled
        resource = flags.resource if self.executor.parallel else CPU
        if resource == CPU and self._awaiting and self.executor.parallel and self._working():
            resource = CPU_SIDE  # a CPU node while the accelerator works: this thread stays free to dispatch
        if resource != CPU:  # on its resource's worker, while this thread goes on with nodes elsewhere
            future = self._submit(resource, node, inputs, missing)
            self._awaiting[node_id] = _Awaiting([future], schedule.hold(), on_worker=True)
            return schedule.requeue()
        return self._act(schedule, node, self._compute(node, inputs, missing))

    def _submit(self, resource: str, node: PreparedNode, inputs: dict[str, list[Any]],
                missing: list[str]) -> concurrent.futures.Future:
        """Start the node's work on its resource; a batchable node of a group's run, with the group's others."""
        if self.gang is not None and resource == ACCELERATOR and node.node.cobatch:
            return self.gang.submit(self.prompt_id, lambda: self._compute(node, inputs, missing))
        return self.executor.workers.submit(resource, self._compute, node, inputs, missing)

    def _compute(self, node: PreparedNode, inputs: dict[str, list[Any]], missing: list[str]) -> _Computed:
        """The node's own work (in any thread): its lazy check, then its calls and their merged outcome."""
        node_id = node.node_id
        display = self.dynprompt.get_display_node_id(node_id) if self.dynprompt.display else node_id
        self.emit("executing", {"node": node_id, "display_node": display, "prompt_id": self.prompt_id})
        began = time.perf_counter() if self.disk is not None else None  # only the disk cache asks how long
        try:
            with collector_resumed():
                ctx = self._context(node)
                batches = input_batches(node, inputs, ctx)
                if node.node.lazy_check is not None:
                    wanted = _asked_for(call_batches(node, batches, ctx, node.node.lazy_check))
                    asked = [name for name in missing if name in wanted]
                    if asked:
                        return _Computed(asked=asked)
                raws = call_batches(node, batches, ctx, node.node.invoke, self._report_block)
                plain = len(raws) == 1 and type(raws[0]) is tuple  # the common case: one call gave its values
                if not plain and any(isinstance(raw, Future) for raw in raws):
                    return _Computed(raws=raws)
                return _Computed(outcome=gather(node, raws))
        except (Interrupted, NodeError):
            raise
        except Exception as exc:
            raise self._node_error(node, exc) from exc
        finally:
            if began is not None:
                self._spent[node_id] = self._spent.get(node_id, 0.0) + time.perf_counter() - began

    def _act(self, schedule: Schedule, node: PreparedNode, computed: _Computed) -> None:
        """Go on from what the node's work gave: wait for inputs it asked for, for its async calls, or finish."""
        if computed.asked:
            self._wait(schedule, node, computed.asked)
        elif computed.outcome is None:
            self._awaiting[node.node_id] = _Awaiting(computed.raws, schedule.hold())
            schedule.requeue()
        else:
            self._finish(schedule, node, computed.outcome)

    def _inputs(self, node: PreparedNode, flags: _InputFlags) -> tuple[dict[str, list[Any]], list[str]]:
        """The node's linked inputs, and the names of those whose source has no value yet (given as None)."""
        inputs: dict[str, list[Any]] = {}
        missing = []
        raw = flags.raw
        known = self.values
        for name, (src, index) in node.links.items():
            values = known.get(src) or self._values_of(src)
            if name in raw:
                inputs[name] = [[src, index]]
            elif values is None:
                missing.append(name)
                inputs[name] = [None]
            else:
                inputs[name] = values[index]
        return inputs, missing

    def _wait(self, schedule: Schedule, node: PreparedNode, names: list[str]) -> bool:
        """Have the node wait for the sources of these inputs, if any; whether it now waits."""
        if not names:
            return False
        for name in names:
            schedule.wait_for(node.links[name][0])
        schedule.requeue()
        return True

    def _finish(self, schedule: Schedule, node: PreparedNode, outcome: Outcome) -> None:
        if outcome.expansions is None:
            self._store(node, outcome.slots, outcome.ui)
            return schedule.done()
        if outcome.ui:
            self._executed(node.node_id, outcome.ui)
        self._guarded(node, lambda: self._expand(schedule, node, outcome.expansions))
        self._expanded[node.node_id] = (outcome.expansions, outcome.ui)
        schedule.requeue()

    def _store(self, node: PreparedNode, slots: tuple[list[Any], ...], ui: dict[str, Any] | None,
               shown: bool = False) -> None:
        node_id = node.node_id
        self.values[node_id] = slots
        self.cache.put(self.keys[node_id], CachedOutput(slots, ui), node_id)
        if self.disk is not None:
            self._store_on_disk(node_id, slots, ui)
        self.result.executed.append(node_id)
        if ui and not shown:
            self._executed(node_id, ui)

    def _store_on_disk(self, node_id: str, slots: tuple[list[Any], ...], ui: dict[str, Any] | None) -> None:
        """Outputs that took long enough to make are kept on disk; an expanded node's time counts for its parent."""
        assert self.disk is not None
        spent = self._spent.pop(node_id, 0.0)
        parent = self.dynprompt.get_parent_node_id(node_id)
        if parent is not None:
            self._spent[parent] = self._spent.get(parent, 0.0) + spent
        if spent >= self.disk.min_seconds and (disk_key := self._disk_key(node_id)):
            self.disk.put(disk_key, slots, ui)

    # ---- expansion ----------------------------------------------------------------------------------------

    def _expand(self, schedule: Schedule, parent: PreparedNode, expansions: list[Any]) -> None:
        """Add each call's new nodes to the run; the parent waits for the nodes its results link to."""
        new_outputs = []
        for graph, result in expansions:
            if graph is None:
                continue
            prepared, order = prepare_expansion(graph, parent.node_id, self.executor.registry, self._known)
            display = self.dynprompt.get_display_node_id(parent.node_id)
            infos = {str(node_id): info for node_id, info in graph.items()}
            for node_id in order:
                info = infos[node_id]
                self.dynprompt.add_ephemeral_node(node_id, info, parent.node_id,
                                                  str(info.get("override_display_id") or display))
                self.nodes[node_id] = prepared[node_id]
                self._new_nodes += 1
                self._ranks[node_id] = self._rank(parent.node_id) + (self._new_nodes,)
                self.keys[node_id] = self._signature(prepared[node_id])
                if prepared[node_id].node.spec.output_node:
                    new_outputs.append(node_id)
            for value in result:
                if is_link(value):
                    source = str(value[0])
                    if source not in self.nodes:
                        raise ExpansionError(f"node {parent.node_id}'s result links to node {source}, which "
                                             "does not exist")
                    schedule.wait_for(source)
        for node_id in new_outputs:
            schedule.add(node_id)

    def _known(self, node_id: str) -> Any:
        node = self.nodes.get(node_id)
        return node.node if node is not None else None

    def _collect(self, schedule: Schedule, node: PreparedNode) -> None:
        """The expanded node's outputs: what its results link to, in its new nodes."""
        expansions, ui = self._expanded.pop(node.node_id)
        outputs = node.node.spec.outputs
        slots: tuple[list[Any], ...] = tuple([] for _ in outputs)
        for graph, result in expansions:
            if graph is None:
                add_to_slots(slots, outputs, result)
                continue
            for slot, value in zip(slots, result):
                if is_link(value):
                    slot.extend(self.values[str(value[0])][value[1]])
                else:
                    slot.append(value)
        self._store(node, slots, ui, shown=True)
        schedule.done()

    # ---- async calls --------------------------------------------------------------------------------------

    def _await_some(self) -> None:
        """Wait until an async call finishes (checking for interrupts), then let its node go on."""
        pending = [f for waiting in self._awaiting.values() for f in waiting.futures if not f.done()]
        if pending:
            concurrent.futures.wait(pending, timeout=ASYNC_POLL_S, return_when=concurrent.futures.FIRST_COMPLETED)
        self.flag.check()
        self._release_finished()

    def _working(self) -> bool:
        """Whether some node's work is in progress on a resource worker."""
        return any(waiting.on_worker and not waiting.released for waiting in self._awaiting.values())

    def _release_finished(self) -> None:
        for waiting in self._awaiting.values():
            waiting.release_if_done()

    # ---- keys -----------------------------------------------------------------------------------------------

    def _sign(self, order: list[str]) -> None:
        """Cache keys for these nodes, given in dependency order."""
        for node_id in order:
            self.keys[node_id] = self._signature(self.nodes[node_id])

    def key_of(self, node_id: str) -> str:
        """The node's cache key (its signature), working out those of its sources first as needed."""
        return self._key(node_id)

    def _key(self, node_id: str) -> str:
        key = self.keys.get(node_id)
        if key is None:  # a node off the plan that an expansion links to: sign it and its ancestors
            self._sign(sorted(self._unsigned_ancestors(node_id), key=self._order.__getitem__))
            key = self.keys[node_id]
        return key

    def _unsigned_ancestors(self, node_id: str) -> set[str]:
        found, stack = {node_id}, [node_id]
        while stack:
            for source, _ in self.nodes[stack.pop()].links.values():
                if source not in self.keys and source not in found:
                    found.add(source)
                    stack.append(source)
        return found

    def _signature(self, node: PreparedNode) -> str:
        fingerprint = None
        if node.node.fingerprint is not None:
            try:
                fingerprint = node.node.fingerprint(node.literals, self.executor.services.dirs)
            except Exception as exc:
                raise NodeError(node.node_id, node.node.class_type, exc) from exc
        elif node.node_id in self.dynprompt.parents and not is_plain(node.literals):
            fingerprint = float("nan")  # values no key can stand for (a tensor): never reused
        if node.node.spec.not_idempotent or always_changes(fingerprint):
            self._volatile.add(node.node_id)  # a fresh key each run (node_signature draws it): nothing to add
        elif files := (self._node_flags.get(node.node_id) or self._flags(node)).model_files:
            fingerprint = [fingerprint, *self._file_stamps(node, files)]
        hidden = self._hidden_key(node) if node.node.spec.has_hidden else None
        return node_signature(node, fingerprint, self.keys, hidden)

    def _file_stamps(self, node: PreparedNode, files: tuple[tuple[str, str], ...]) -> list[Any]:
        """Size and modification time of each model file the node names (a folder model: of its files)."""
        stamps: list[Any] = []
        dirs = self.executor.services.dirs
        for name, folder in files:
            chosen = node.literals.get(name)
            try:
                path = dirs.find_model(folder, str(chosen))
            except (FileNotFoundError, ValueError, OSError):
                stamps.append(None)
                continue
            paths = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            stamps.append([[stat.st_size, stat.st_mtime_ns] for stat in map(Path.stat, paths)])
        return stamps

    def _hidden_key(self, node: PreparedNode) -> dict[str, str]:
        """What stands for the node's hidden inputs in its cache key: the values it receives, or their digests.

        The node id (UNIQUE_ID) is used as it is. The prompt and the PNG info are hashed once per run: a node that
        reads them (to embed them in a file, say) runs again when they change, even if its other inputs did not.
        """
        key = {}
        for spec in node.node.spec.inputs:
            if spec.section != "hidden":
                continue
            if spec.hidden_kind == "UNIQUE_ID":
                key[spec.name] = node.node_id
            else:
                kind = "PROMPT" if spec.hidden_kind == "DYNPROMPT" else (spec.hidden_kind or spec.type)
                if kind not in self._digests:
                    self._digests[kind] = value_digest(hidden_value(kind, self._context(node)))
                key[spec.name] = self._digests[kind]
        return key

    # ---- events and errors ------------------------------------------------------------------------------

    def _cached_late(self, node_id: str) -> None:
        """A node whose output another run stored after this one began (a prompt of the same group)."""
        self.result.cached.append(node_id)
        self._cached_ids.add(node_id)
        self.emit("execution_cached", {"nodes": [node_id], "prompt_id": self.prompt_id, "timestamp": _now_ms()})

    def _executed(self, node_id: str, ui: dict[str, Any]) -> None:
        self.result.outputs[node_id] = ui
        display = self.dynprompt.get_display_node_id(node_id) if self.dynprompt.display else node_id
        self.emit("executed", {"node": node_id, "display_node": display, "output": ui, "prompt_id": self.prompt_id})

    def _context(self, node: PreparedNode) -> NodeContext:
        node_id = node.node_id
        return NodeContext(node_id, self.prompt_id, self.executor.services, self.flag,
                           extra_data=self.extra_data, prompt_source=self._api_prompt,
                           on_progress=lambda value, total, preview: self._progress(node_id, value, total, preview),
                           instances=self.executor.instances, dynprompt=self.dynprompt)

    def _guarded(self, node: PreparedNode, action: Callable[[], Any]) -> Any:
        """Run part of a node's work; its failure becomes the node's error."""
        try:
            with collector_resumed():
                return action()
        except (Interrupted, NodeError):
            raise
        except Exception as exc:
            raise self._node_error(node, exc) from exc

    def _node_error(self, node: PreparedNode, exc: BaseException) -> NodeError:
        """The failure as the prompt's own node's error (the one an expanded node stands in for)."""
        real = self.dynprompt.get_real_node_id(node.node_id)
        class_type = self.nodes[real].node.class_type if real in self.nodes else node.node.class_type
        return NodeError(real, class_type, exc, ephemeral=node.node_id if real != node.node_id else None)

    def _report_block(self, node: PreparedNode, blocker: ExecutionBlocker) -> ExecutionBlocker:
        """A blocker with a message is reported by the first node it stops; nodes after it stop silently."""
        if blocker.message is None:
            return blocker
        self.block_error("execution_error", error_payload(
            self.prompt_id, node_id=node.node_id, node_type=node.node.class_type, executed=self.result.executed,
            message=f"Execution Blocked: {blocker.message}", exception_type="ExecutionBlocked"))
        return ExecutionBlocker(None)

    def _api_prompt(self) -> dict[str, Any]:
        if self.api_prompt is None:
            self.api_prompt = self.workflow.to_api()
        return self.api_prompt

    def _progress(self, node_id: str, value: int, total: int, preview: Any) -> None:
        self.emit("progress", {"value": value, "max": total, "prompt_id": self.prompt_id, "node": node_id})
        if preview is not None:
            self.emit("preview", {"node": node_id, "prompt_id": self.prompt_id, "image": preview})

    def _cycle(self, schedule: Schedule) -> NodeError:
        """Nothing can run, yet nodes are left: new nodes that wait on each other. Blame the first new one."""
        stuck = schedule.stuck()
        blamed = next((n for n in stuck if n in self.dynprompt.parents), stuck[0])
        return NodeError(self.dynprompt.get_real_node_id(blamed), self.nodes[blamed].node.class_type,
                         DependencyCycleError(f"dependency cycle among nodes {', '.join(stuck)}"),
                         ephemeral=blamed if blamed in self.dynprompt.parents else None)

    def _failed(self, exc: NodeError) -> None:
        self.result.status = "error"
        where = f"in expanded node {exc.ephemeral}: " if exc.ephemeral else ""
        self.result.error = error_payload(
            self.prompt_id, exc.cause, node_id=exc.node_id, node_type=exc.class_type,
            executed=self.result.executed, current_inputs=_preview_inputs(self.nodes.get(exc.node_id)),
            current_outputs=sorted(self.values), message=f"{where}{exc.cause}",
            exception_type=_qualified_name(type(exc.cause)))
        self.emit("execution_error", self.result.error)

    def _interrupted(self, staged: str | None) -> None:
        current = self.dynprompt.get_real_node_id(staged) if staged else None
        self.result.status = "interrupted"
        self.result.error = {
            "prompt_id": self.prompt_id,
            "node_id": current,
            "node_type": self.nodes[current].node.class_type if current in self.nodes else None,
            "executed": list(self.result.executed),
            "timestamp": _now_ms(),
        }
        self.emit("execution_interrupted", self.result.error)


@dataclass(frozen=True)
class _InputFlags:
    lazy: frozenset[str]  # evaluated only when the node's lazy check asks
    raw: frozenset[str]  # given as the link itself
    model_files: tuple[tuple[str, str], ...]  # (input, folder) of inputs naming a model file
    resource: str  # what the node runs on (sdgraph.resources)


@dataclass
class _Computed:
    """What a node's work gave: lazy inputs it asks for, async calls to await, or its outcome."""

    asked: list[str] = field(default_factory=list)
    raws: list[Any] = field(default_factory=list)
    outcome: Outcome | None = None


class DependencyCycleError(Exception):
    """Nodes added by expansion that wait on each other's outputs."""


def _asked_for(results: list[Any]) -> set[str]:
    """The input names a node's lazy checks asked for (each call's list; blocked calls ask for nothing)."""
    return {name for result in results if isinstance(result, (list, tuple)) for name in result
            if isinstance(name, str)}


@dataclass
class _Awaiting:
    """A node's calls, some of them async futures, and the hold its node has on the schedule until they end."""

    raws: list[Any]
    release: Callable[[], None]
    on_worker: bool = False  # one future: the node's work on a resource worker (else the node's async calls)
    released: bool = False

    @property
    def futures(self) -> list[Future]:
        return [raw for raw in self.raws if isinstance(raw, Future)]

    def release_if_done(self) -> None:
        if not self.released and all(f.done() for f in self.futures):
            self.released = True
            self.release()

    def results(self) -> list[Any]:
        return [raw.result() if isinstance(raw, Future) else raw for raw in self.raws]

    def cancel(self) -> None:
        """Stop what has not started; a worker already running the node's work is waited for."""
        for future in self.futures:
            future.cancel()
        if self.on_worker:
            concurrent.futures.wait(self.futures)


def _serialised(listener: Listener) -> Listener:
    lock = threading.Lock()

    def emit(event: str, data: dict[str, Any]) -> None:
        with lock:
            listener(event, data)

    return emit


_frozen = {"depth": 0}
_frozen_lock = threading.Lock()


@contextmanager
def engine_state_frozen() -> Iterator[None]:
    """While nodes run, the collector skips the objects that existed before (the workflow, the plan, the cache).
    Runs of a group nest: the last one to end lets the collector see everything again."""
    with _frozen_lock:
        _frozen["depth"] += 1
        gc.freeze()
    try:
        yield
    finally:
        with _frozen_lock:
            _frozen["depth"] -= 1
            if _frozen["depth"] == 0:
                gc.unfreeze()


def _preview_inputs(node: PreparedNode | None) -> dict[str, Any]:
    if node is None:
        return {}
    return {name: repr(value)[:200] for name, value in node.literals.items()}
