"""Cross-prompt batching on toy nodes: a group of prompts runs at once, their model calls merge, and each prompt's
results, events and record are those of its run alone."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from sdgraph.cobatch import Gang, Rendezvous, current_rendezvous
from sdgraph.context import Services
from sdgraph.execute import Executor, Member
from sdgraph.node import Input, Int, Node, NodeOutput, Output, String
from sdgraph.paths import Dirs
from sdgraph.registry import Registry
from sdgraph.resources import Workers

MODEL, NUMBER = "MODEL", "INT"
MERGES: list[tuple[str, int]] = []  # (model, calls merged) of every toy model call
LOCK = threading.Lock()


def toy_model_call(model: str, x: int) -> int:
    """Stands for a UNet call: merged with other prompts' calls to the same model inside a batched job."""
    def run(xs: list[int]) -> list[int]:
        with LOCK:
            MERGES.append((model, len(xs)))
        return [x * 3 + len(model) for x in xs]  # each caller's own answer, whatever the batch
    rendezvous = current_rendezvous()
    return run([x])[0] if rendezvous is None else rendezvous.call(("toy", model), x, run)


class ToyLoader(Node):
    category = "test"
    inputs = [String("name", "base")]
    outputs = [Output(MODEL)]

    def run(self, name: str) -> tuple:
        return (name,)


class ToyPatch(Node):
    category = "test"
    inputs = [Input("model", MODEL), String("suffix", "+lora")]
    outputs = [Output(MODEL)]

    def run(self, model: str, suffix: str) -> tuple:
        return (model + suffix,)


class ToySampler(Node):
    """A sampler: `steps` model calls on a value that starts at its seed."""

    category = "test"
    cobatch = True
    inputs = [Input("model", MODEL), Int("seed", 0, min=0, max=10**9), Int("steps", 3, min=0, max=1000),
              Int("fail", 0, min=0, max=1)]
    outputs = [Output(NUMBER)]

    def run(self, model: str, seed: int, steps: int, fail: int) -> tuple:
        x = seed
        for step in range(steps):
            x = toy_model_call(model, x) % 1_000_003
            self.ctx.progress(step + 1, steps)
            time.sleep(0.002)
        if fail:
            raise ValueError("the toy sampler failed")
        return (x,)


class ToyShow(Node):
    category = "test"
    output_node = True
    inputs = [Input("value", NUMBER)]

    def run(self, value: int) -> NodeOutput:
        return NodeOutput((), {"value": [value]})


class ToyWait(Node):
    """Takes a while before its output exists (a slow branch ahead of a sampler)."""

    category = "test"
    inputs = [Input("model", MODEL), Int("ms", 0, min=0, max=10_000)]
    outputs = [Output(MODEL)]

    def run(self, model: str, ms: int) -> tuple:
        time.sleep(ms / 1000)
        return (model,)


def executor(tmp_path, **options: Any) -> Executor:
    registry = Registry()
    registry.add_native([ToyLoader, ToyPatch, ToySampler, ToyShow, ToyWait], "cobatch")
    assert not registry.problems
    return Executor(registry, Services(dirs=Dirs(base=tmp_path)), **options)


def prompt(seed: int, *, model: str = "base", steps: int = 3, fail: int = 0, patch: bool = False,
           wait_ms: int = 0) -> dict[str, Any]:
    wf: dict[str, Any] = {"1": {"class_type": "ToyLoader", "inputs": {"name": model}}}
    source = ["1", 0]
    if patch:
        wf["2"] = {"class_type": "ToyPatch", "inputs": {"model": source, "suffix": "+lora"}}
        source = ["2", 0]
    if wait_ms:
        wf["5"] = {"class_type": "ToyWait", "inputs": {"model": source, "ms": wait_ms}}
        source = ["5", 0]
    wf["3"] = {"class_type": "ToySampler", "inputs": {"model": source, "seed": seed, "steps": steps, "fail": fail}}
    wf["4"] = {"class_type": "ToyShow", "inputs": {"value": ["3", 0]}}
    return wf


def run_group(ex: Executor, prompts: list[dict[str, Any]]) -> tuple[list[Any], list[list[tuple[str, Any]]]]:
    events: list[list[tuple[str, Any]]] = [[] for _ in prompts]
    members = [Member(ex.prepare(p), f"p{i}", listener=lambda e, d, i=i: events[i].append((e, d.get("node"))))
               for i, p in enumerate(prompts)]
    return ex.execute_group(members), events


def solo_events(ex: Executor, wf: dict[str, Any]) -> tuple[Any, list[tuple[str, Any]]]:
    events: list[tuple[str, Any]] = []
    result = ex.run(wf, listener=lambda e, d: events.append((e, d.get("node"))))
    return result, events


@pytest.fixture(autouse=True)
def fresh_merges():
    MERGES.clear()
    yield


# ---- the rendezvous and the gang ------------------------------------------------------------------------------

def call_in_threads(rendezvous: Rendezvous, calls: list[tuple[Any, int]], run) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    def work(i: int, key: Any, x: int) -> None:
        try:
            results[i] = rendezvous.call(key, x, run)
        except Exception as exc:  # noqa: BLE001
            results[i] = exc
        finally:
            rendezvous.leave()

    threads = [threading.Thread(target=work, args=(i, k, x)) for i, (k, x) in enumerate(calls)]
    for t in threads:
        t.start()
    server = threading.Thread(target=rendezvous.serve)
    server.start()
    for t in threads:
        t.join(5)
    server.join(5)
    assert not server.is_alive()
    return results


def test_calls_of_one_key_are_computed_in_one_run_and_each_caller_gets_its_own_part():
    batches: list[list[int]] = []

    def run(xs: list[int]) -> list[int]:
        batches.append(list(xs))
        return [x * 10 for x in xs]

    results = call_in_threads(Rendezvous(4, patience=5.0), [("a", 1), ("a", 2), ("a", 3), ("b", 4)], run)
    assert results == [10, 20, 30, 40]
    assert sorted(map(sorted, batches)) == [[1, 2, 3], [4]]  # two keys: two runs, never one per call


def test_a_failed_merged_run_fails_each_of_its_callers_only():
    def run(xs: list[int]) -> list[int]:
        if 2 in xs:
            raise ValueError("bad batch")
        return xs

    results = call_in_threads(Rendezvous(3, patience=5.0), [("a", 1), ("a", 2), ("b", 3)], run)
    assert [type(r) for r in results[:2]] == [ValueError, ValueError] and results[2] == 3


def test_a_call_waits_for_a_slow_participant_only_for_its_patience():
    rendezvous = Rendezvous(2, patience=0.2)
    server = threading.Thread(target=rendezvous.serve)
    server.start()
    start = time.monotonic()
    assert rendezvous.call("a", 5, lambda xs: [x + 1 for x in xs]) == 6  # the other participant never calls
    waited = time.monotonic() - start
    rendezvous.leave()
    rendezvous.leave()
    server.join(5)
    assert 0.15 <= waited < 2.0


def test_the_gang_launches_one_job_once_every_member_has_arrived():
    workers = Workers()
    gang = Gang(workers, ["a", "b", "c"], wait=5.0)
    order: list[str] = []
    futures = [gang.submit("a", lambda: order.append("a") or 1)]
    time.sleep(0.1)
    assert not futures[0].done()  # b and c may still come
    futures.append(gang.submit("b", lambda: order.append("b") or 2))
    gang.leave("c")  # c ends without a batchable node: not waited for
    assert [f.result(5) for f in futures] == [1, 2]
    gang.close()
    workers.shutdown()
    assert gang.jobs == [2]


def test_the_gang_stops_waiting_for_a_late_member_after_its_wait():
    workers = Workers()
    gang = Gang(workers, ["a", "b"], wait=0.2)
    start = time.monotonic()
    assert gang.submit("a", lambda: "done").result(5) == "done"
    assert 0.15 <= time.monotonic() - start < 3.0
    gang.close()
    workers.shutdown()


# ---- groups of prompts --------------------------------------------------------------------------------------

def test_a_group_gives_each_prompt_its_solo_result_events_and_record(tmp_path):
    ex_solo, ex_group = executor(tmp_path / "solo"), executor(tmp_path / "group")
    prompts = [prompt(seed) for seed in (1, 7, 42, 1000)]
    solo = [solo_events(ex_solo, p) for p in prompts]
    MERGES.clear()
    recorded: dict[str, str] = {}
    events: list[list[tuple[str, Any]]] = [[] for _ in prompts]
    members = [Member(ex_group.prepare(p), f"p{i}", listener=lambda e, d, i=i: events[i].append((e, d.get("node"))),
                      record=lambda r: recorded.__setitem__(r.prompt_id, r.status)) for i, p in enumerate(prompts)]
    results = ex_group.execute_group(members)
    assert [r.outputs for r in results] == [s[0].outputs for s in solo]
    assert recorded == {f"p{i}": "success" for i in range(4)}
    assert ex_group.last_group_jobs == [4]
    assert MERGES == [("base", 4)] * 3  # three steps, each one call for the four prompts
    for (_, alone), together in zip(solo, events):
        # the first prompt to load the model runs it; for the others it is already cached
        strip = [e for e in together if not (e[0] == "execution_cached" or e[1] == "1")]
        assert strip == [e for e in alone if not (e[0] == "execution_cached" or e[1] == "1")]
        assert together[-1] == ("executing", None) and ("execution_success", None) in together


def test_prompts_with_another_model_call_it_in_their_own_merge(tmp_path):
    ex = executor(tmp_path)
    results, _ = run_group(ex, [prompt(1), prompt(2, patch=True), prompt(3), prompt(4, patch=True)])
    assert all(r.ok for r in results)
    assert sorted(MERGES) == sorted([("base", 2)] * 3 + [("base+lora", 2)] * 3)
    assert [r.outputs["4"]["value"][0] for r in results] == \
        [solo_events(executor(tmp_path / str(i)), p)[0].outputs["4"]["value"][0]
         for i, p in enumerate([prompt(1), prompt(2, patch=True), prompt(3), prompt(4, patch=True)])]


def test_prompts_of_different_lengths_merge_while_they_overlap(tmp_path):
    ex = executor(tmp_path)
    results, _ = run_group(ex, [prompt(1, steps=2), prompt(2, steps=5)])
    assert all(r.ok for r in results)
    assert MERGES == [("base", 2)] * 2 + [("base", 1)] * 3


def test_a_failing_prompt_fails_alone(tmp_path):
    ex = executor(tmp_path)
    results, events = run_group(ex, [prompt(1), prompt(2, fail=1), prompt(3)])
    assert [r.status for r in results] == ["success", "error", "success"]
    assert "toy sampler failed" in results[1].error["exception_message"]
    assert ("execution_error", None) in events[1] and ("execution_error", None) not in events[0]


def test_interrupting_one_prompt_of_a_group_leaves_the_others_running(tmp_path):
    ex = executor(tmp_path)
    prompts = [prompt(1, steps=150), prompt(2, steps=150), prompt(3, steps=150)]
    timer = threading.Timer(0.1, lambda: ex.interrupt("p1"))
    timer.start()
    results, _ = run_group(ex, prompts)
    timer.join()
    assert [r.status for r in results] == ["success", "interrupted", "success"]


def test_interrupting_the_executor_stops_the_whole_group(tmp_path):
    ex = executor(tmp_path)
    timer = threading.Timer(0.1, ex.interrupt)
    timer.start()
    results, _ = run_group(ex, [prompt(1, steps=150), prompt(2, steps=150)])
    timer.join()
    assert [r.status for r in results] == ["interrupted", "interrupted"]
    assert ex.run(prompt(5)).ok  # the interrupt ends with the group


def test_an_interrupt_sent_before_a_member_starts_still_reaches_it(tmp_path):
    ex = executor(tmp_path)
    ex.interrupt("p0")
    results, _ = run_group(ex, [prompt(1), prompt(2)])
    assert [r.status for r in results] == ["interrupted", "success"]


def test_a_member_held_up_past_the_wait_joins_no_job_but_still_finishes(tmp_path):
    ex = executor(tmp_path, batch_wait=0.1)
    results, _ = run_group(ex, [prompt(1), prompt(2, wait_ms=600)])
    assert all(r.ok for r in results)
    assert ex.last_group_jobs == [1, 1]
    assert MERGES == [("base", 1)] * 6


def test_sequential_executors_run_a_group_one_prompt_at_a_time(tmp_path):
    ex = executor(tmp_path, parallel=False)
    results, _ = run_group(ex, [prompt(1), prompt(2)])
    assert all(r.ok for r in results) and MERGES == [("base", 1)] * 6 and ex.batch_max == 1


def test_batch_keys_name_the_models_the_samplers_use(tmp_path):
    ex = executor(tmp_path)
    key = ex.batch_key
    assert key(ex.prepare(prompt(1))) == key(ex.prepare(prompt(99, steps=7)))
    assert key(ex.prepare(prompt(1))) != key(ex.prepare(prompt(1, model="other")))
    assert key(ex.prepare(prompt(1))) != key(ex.prepare(prompt(1, patch=True)))
    no_sampler = {"1": {"class_type": "ToyLoader", "inputs": {"name": "x"}},
                  "2": {"class_type": "ToyWait", "inputs": {"model": ["1", 0], "ms": 0}}}
    assert key(ex.prepare(no_sampler)) is None
    assert executor(tmp_path, batch_max=1).batch_key(ex.prepare(prompt(1))) is None
