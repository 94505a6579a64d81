"""ComfyUI's `execution` module for plugins: the names packs import or patch, over sdgraph's own executor.

Packs import `execution` for a few constants and classes (`ExecutionBlocker`, `ExecutionResult`,
`CacheType`), and some patch ComfyUI's executor in place: rgthree once replaced `recursive_execute`, Impact
Pack wraps `PromptExecutor.handle_execution_error`. sdgraph runs prompts with its own executor
(`sdgraph.execute`), which never calls these, so such a patch loads without error and has no effect: the
pack's nodes still work, whatever extra behaviour the patch added (rgthree's faster recursion, Impact's error
hook) does not happen. The stand-ins below exist so the patching itself works (the attribute is there to wrap).
"""
from __future__ import annotations

import logging
from enum import Enum
from typing import Any

from comfy_execution.graph import ExecutionBlocker  # noqa: F401 - packs import it from here too
from comfy_execution.graph_utils import GraphBuilder, is_link  # noqa: F401

log = logging.getLogger("sdgraph.plugins")

SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
NOT_USED = ("sdgraph runs prompts with its own executor; ComfyUI's PromptExecutor is here only so that packs "
            "which import or patch it load")


class ExecutionResult(Enum):
    SUCCESS = 0
    FAILURE = 1
    PENDING = 2


class CacheType(Enum):
    CLASSIC = 0
    LRU = 1
    DEPENDENCY_AWARE = 2


class DuplicateNodeError(Exception):
    pass


class PromptExecutor:
    """Never called by sdgraph: patching its methods has no effect, and running it is refused plainly."""

    def __init__(self, server: Any = None, cache_type: Any = False, cache_size: Any = None) -> None:
        self.server = server
        self.reset()

    def reset(self) -> None:
        self.status_messages: list[tuple[str, dict[str, Any]]] = []
        self.success = True
        self.history_result: dict[str, Any] = {}

    def add_message(self, event: str, data: dict[str, Any], broadcast: bool) -> None:
        self.status_messages.append((event, data))

    def handle_execution_error(self, prompt_id: str, prompt: Any, current_outputs: Any, executed: Any,
                               error: Any, ex: Any) -> None:
        self.success = False

    def execute(self, prompt: Any, prompt_id: str, extra_data: Any = None, execute_outputs: Any = None) -> None:
        raise NotImplementedError(NOT_USED)

    async def execute_async(self, prompt: Any, prompt_id: str, extra_data: Any = None,
                            execute_outputs: Any = None) -> None:
        raise NotImplementedError(NOT_USED)


def recursive_execute(*args: Any, **kwargs: Any) -> Any:
    """ComfyUI's executor before 2024 (rgthree patched it); not sdgraph's."""
    raise NotImplementedError(NOT_USED)


def format_value(x: Any) -> Any:
    """A value as ComfyUI's error reports show it: plain types as they are, anything else as text."""
    if x is None or isinstance(x, (int, float, bool, str)):
        return x
    return str(x)


def full_type_name(klass: type) -> str:
    module = klass.__module__
    return klass.__qualname__ if module == "builtins" else f"{module}.{klass.__qualname__}"
