"""Collector pauses nest across threads; a node's own work runs with the collector."""
from __future__ import annotations

import gc
import threading

from sdgraph.collector import collector_paused, collector_resumed, drain


def test_pauses_nest_and_resume_only_at_the_end() -> None:
    assert gc.isenabled()
    with collector_paused():
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_resumed_gives_back_all_of_this_threads_holds() -> None:
    with collector_paused(), collector_paused():
        with collector_resumed():
            assert gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_another_threads_pause_keeps_the_collector_off() -> None:
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with collector_paused():
            entered.set()
            leave.wait(5)

    other = threading.Thread(target=hold)
    other.start()
    entered.wait(5)
    try:
        with collector_paused(), collector_resumed():
            assert not gc.isenabled()
    finally:
        leave.set()
        other.join(5)
    assert gc.isenabled()


def test_a_pause_does_not_turn_on_a_collector_that_was_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_drain_empties_mappings() -> None:
    first, second = {1: [1], 2: [2]}, {"a": {}}
    drain(first, None, second)
    assert first == {} and second == {}
