"""`comfy_execution.graph`: the names packs import from it (the blocker, the dynamic prompt, the errors)."""
from __future__ import annotations

from sdgraph.expansion import DynamicPrompt, ExpansionError
from sdgraph.node import ExecutionBlocker
from sdgraph.run import DependencyCycleError

__all__ = ["DependencyCycleError", "DynamicPrompt", "ExecutionBlocker", "NodeInputError", "NodeNotFoundError"]


class NodeInputError(ExpansionError):
    pass


class NodeNotFoundError(KeyError):
    pass
