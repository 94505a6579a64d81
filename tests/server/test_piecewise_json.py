"""Piecewise JSON reads what json.loads reads, refuses what it refuses, and writes what it parses back."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdgraph.server import piecewise_json

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                                          max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(VALUES, st.sampled_from([None, 2]), st.sampled_from([(", ", ": "), (",", ":")]), st.integers(0, 3))
def test_reads_what_json_reads(value, indent, separators, depth) -> None:
    text = json.dumps(value, indent=indent, separators=separators)
    assert piecewise_json.loads(text, depth=depth) == value


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(), VALUES, max_size=5))
def test_writes_what_it_reads(value) -> None:
    text = piecewise_json.dumps_members(value)
    assert json.loads(text) == value == piecewise_json.loads(text)


@pytest.mark.parametrize("text", ['{"a":1,}', '{"a" 1}', '{"a":1 "b":2}', '{"a":1}x', '{1:2}', '{"a":1', "{",
                                  '{"a":{"b":1}', '{"a":1:2}', ""])
def test_refuses_what_json_refuses(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        piecewise_json.loads(text, depth=2)
