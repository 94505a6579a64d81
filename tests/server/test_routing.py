"""The routing policy alone (no processes): a prompt's models, affinity, a hot model spreading, fairness."""
from __future__ import annotations

import json

from sdgraph.server.queue import QueueItem
from sdgraph.server.routing import Router, prompt_models
from tests.server.nodes import chain
from tests.server.worker_nodes import make_executor, model_prompt


def item(prompt_id: str, prompt: dict) -> QueueItem:
    return QueueItem(prompt_id, 0.0, 0, json.dumps(prompt), "{}", ["2"])


def router(tmp_path, **options) -> Router:
    registry = make_executor(tmp_path).registry
    r = Router(lambda prompt: prompt_models(prompt, registry), **options)
    r.add("w1")
    r.add("w2")
    return r


def test_a_prompt_s_models_are_the_model_files_it_names(tmp_path) -> None:
    registry = make_executor(tmp_path).registry
    assert prompt_models(model_prompt("a.safetensors", 1), registry) == {"checkpoints/a.safetensors"}
    assert prompt_models(chain(1), registry) == frozenset()


def test_a_worker_takes_the_oldest_prompt_whose_models_it_holds(tmp_path) -> None:
    r = router(tmp_path)
    a, b = item("a", model_prompt("a.safetensors", 1)), item("b", model_prompt("b.safetensors", 2))
    r.started("w1", item("first", model_prompt("b.safetensors", 0)))  # w1 now holds b
    assert r.pick("w1", [a, b]) is b
    assert r.pick("w2", [a, b]) is a  # b is warm on w1, a on nobody


def test_a_hot_model_spreads_once_its_queue_is_long(tmp_path) -> None:
    r = router(tmp_path)
    r.estimates.run_s, r.estimates.load_s = 1.0, 1.0
    r.started("w1", item("first", model_prompt("a.safetensors", 0)))  # w1 holds a and is busy
    hot = [item(f"a{i}", model_prompt("a.safetensors", i)) for i in range(10)]
    assert r.pick("w2", hot[:1]) is None  # one waiting: w1 gets to it (in half a run) before a load here ends
    assert r.pick("w2", hot) is hot[1]  # the second would wait 1.5 runs: loading here is quicker


def test_a_prompt_nobody_holds_is_not_passed_over_forever(tmp_path) -> None:
    r = router(tmp_path, max_skips=3)
    r.started("w1", item("first", model_prompt("a.safetensors", 0)))
    r.finished("w1", item("first", model_prompt("a.safetensors", 0)), 0.1, False)
    rare = item("rare", model_prompt("b.safetensors", 1))
    popular = [item(f"a{i}", model_prompt("a.safetensors", i)) for i in range(10)]
    taken = []
    for i in range(5):
        window = [rare, *[p for p in popular if p.prompt_id not in taken]]
        chosen = r.pick("w1", window)
        taken.append(chosen.prompt_id)
        if chosen is rare:
            break
    assert taken == ["a0", "a1", "a2", "rare"]  # passed over 3 times, then taken


def test_what_routing_remembers_is_bounded(tmp_path, monkeypatch) -> None:
    from sdgraph.server import routing

    monkeypatch.setattr(routing, "MEMORY", 20)
    r = router(tmp_path)
    for n in range(10):  # prompts seen in a window, then deleted while pending: they never finish
        window = [item(f"g{n}-{i}", model_prompt("a.safetensors", i)) for i in range(8)]
        r.pick("w1", window)
    assert len(r._models) <= 20 + 8
