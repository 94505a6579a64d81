"""A list given as `{"__value__": [...]}` reaches the node as that list, as in ComfyUI (a bare two-item list
would read as a link). Sockets without a widget (custom types, "*") take a wrapped value; a bare literal there is
still an error."""
from __future__ import annotations

import pytest

from sdgraph.context import Services
from sdgraph.execute import Executor
from sdgraph.node import Input, Node, NodeOutput
from sdgraph.paths import Dirs
from sdgraph.registry import Registry


class Total(Node):
    """Output node: the sum of a list of numbers, given as a value."""

    category = "test"
    output_node = True
    inputs = [Input("values", "FLOATS")]

    def run(self, values: list) -> NodeOutput:
        return NodeOutput((), {"total": [sum(values)], "kind": [type(values).__name__]})


@pytest.fixture
def executor(tmp_path) -> Executor:
    registry = Registry()
    registry.add_native([Total], "lists")
    assert not registry.problems, registry.problems
    return Executor(registry, Services(dirs=Dirs(base=tmp_path)))


def test_a_wrapped_list_reaches_the_node(executor: Executor) -> None:
    result = executor.run({"1": {"class_type": "Total", "inputs": {"values": {"__value__": [1.5, 2, 3]}}}})
    assert result.ok, result.error or result.node_errors
    assert result.outputs["1"] == {"total": [6.5], "kind": ["list"]}


def test_a_bare_literal_on_a_socket_without_a_widget_is_still_refused(executor: Executor) -> None:
    result = executor.run({"1": {"class_type": "Total", "inputs": {"values": 7}}})
    assert not result.ok
    assert result.node_errors["1"]["errors"][0]["type"] == "invalid_input_type"
