"""`comfy_api.latest.io`: the V3 node API (ComfyNode, Schema, NodeOutput, Hidden and the socket types)."""
from __future__ import annotations

from comfy_execution.graph_utils import ExecutionBlocker

from ._dynamic import *  # noqa: F403
from ._dynamic import __all__ as _dynamic_names
from ._iotypes import *  # noqa: F403
from ._iotypes import __all__ as _type_names
from ._node import *  # noqa: F403
from ._node import __all__ as _node_names
from .ui import UIOutput as _UIOutput  # noqa: F401 - ComfyUI's name

__all__ = [*_type_names, *_dynamic_names, *_node_names, "ExecutionBlocker"]
