"""`comfy_execution.graph_utils`: GraphBuilder, ExecutionBlocker, is_link, add_graph_prefix, over sdgraph's own
expansion support (`sdgraph.expansion`), so a pack's subgraphs run through sdgraph's executor."""
from __future__ import annotations

from typing import Any

from sdgraph.expansion import Subgraph, SubgraphNode, call_scope, new_prefix
from sdgraph.node import ExecutionBlocker

__all__ = ["ExecutionBlocker", "GraphBuilder", "Node", "add_graph_prefix", "is_link"]


def is_link(obj: Any) -> bool:
    """`[node_id, output_index]` as ComfyUI reads one: a two-item list of a str id and a number."""
    return isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], str) and isinstance(obj[1], (int, float))


class GraphBuilder(Subgraph):
    """ComfyUI's builder of expansion graphs; ids get the running call's prefix unless one is given."""

    def __init__(self, prefix: str | None = None) -> None:
        super().__init__(prefix=new_prefix() if prefix is None else prefix)

    @classmethod
    def set_default_prefix(cls, prefix_root: str, call_index: int, graph_index: int = 0) -> None:
        call_scope(prefix_root, call_index, graph_index)  # for the rest of this call

    @classmethod
    def alloc_prefix(cls, root: str | None = None, call_index: int | None = None,
                     graph_index: int | None = None) -> str:
        if root is None and call_index is None and graph_index is None:
            return new_prefix()
        return f"{root or ''}.{call_index or 0}.{graph_index or 0}."


Node = SubgraphNode  # the builder's node class, under ComfyUI's name


def add_graph_prefix(graph: dict[str, Any], outputs: tuple[Any, ...], prefix: str
                     ) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """The graph with `prefix` before every node id and internal link, and the outputs likewise."""
    def renamed(value: Any) -> Any:
        return [prefix + value[0], value[1]] if is_link(value) else value

    new_graph = {prefix + node_id: {"class_type": info["class_type"],
                                    "inputs": {k: renamed(v) for k, v in info.get("inputs", {}).items()}}
                 for node_id, info in graph.items()}
    return new_graph, tuple(renamed(o) for o in outputs)
