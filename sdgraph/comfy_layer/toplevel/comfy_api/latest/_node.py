"""The V3 node class: `io.ComfyNode` with `define_schema` -> `io.Schema`, `execute` -> `io.NodeOutput`.

Node classes are never instantiated to run: each call gets a throw-away subclass whose `hidden` holds that call's
hidden values (`cls.hidden.unique_id`, ...), and `execute` is called on it as a classmethod.

The class also answers the interface the engine side reads (sdgraph.comfy_v3), in ComfyUI's own names:
`GET_SCHEMA`, `GET_NODE_INFO_V1` (the `/object_info` entry), `PREPARE_CLASS_CLONE`, `EXECUTE_NORMALIZED[_ASYNC]`,
`GET_BASE_CLASS`, and the V1 attributes some packs read off other nodes (`RETURN_TYPES`, `CATEGORY`, ...).
"""
from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from comfy_execution.graph_utils import ExecutionBlocker

from ._dynamic import MatchType, inputs_description
from ._iotypes import Input, Output


class Hidden(str, Enum):
    """Values the engine supplies to a node that asks for them (read as `cls.hidden.<name>`)."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    """One call's hidden values by name; a name the node did not ask for reads as None."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        for member in Hidden:
            setattr(self, member.name, (values or {}).get(member.value))

    def __getattr__(self, name: str) -> Any:
        return None

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> HiddenHolder:
        """From `{Hidden kind (e.g. "UNIQUE_ID"): value}`."""
        return cls({str(getattr(key, "value", key)): value for key, value in (values or {}).items()})


@dataclass
class Schema:
    """What a V3 node declares: its id, how it is shown, its inputs, outputs and flags."""

    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    search_aliases: list[str] = field(default_factory=list)
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_dev_only: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False
    accept_all_inputs: bool = False
    essentials_category: str | None = None
    has_intermediate_output: bool = False
    price_badge: Any = None

    def validate(self) -> None:
        """Input ids, and output ids, must be unique; inputs and outputs may not share an id."""
        inputs = [item.id for item in self.inputs or []]
        outputs = [item.id for item in self.outputs or []]
        issues = [f"{what} ids must be unique, but {[i for i, n in Counter(ids).items() if n > 1]} are not."
                  for what, ids in (("Input", inputs), ("Output", outputs)) if len(set(ids)) != len(ids)]
        if shared := set(inputs) & set(outputs):
            issues.append(f"Ids must be unique between inputs and outputs, but {shared} are not.")
        if issues:
            raise ValueError(f"node {self.node_id}: " + " ".join(issues))

    def finalize(self) -> None:
        """Add the hidden values output and API nodes always get, and ids for outputs declared without."""
        self.inputs, self.outputs, self.hidden = list(self.inputs or []), list(self.outputs or []), \
            list(self.hidden or [])
        implied = ([Hidden.auth_token_comfy_org, Hidden.api_key_comfy_org] if self.is_api_node else []) + \
                  ([Hidden.prompt, Hidden.extra_pnginfo] if self.is_output_node else [])
        self.hidden += [kind for kind in dict.fromkeys(implied) if kind not in self.hidden]
        for index, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{index}_{output.io_type}_"

    def node_info(self, python_module: str) -> dict[str, Any]:
        """The `/object_info` entry (fields of ComfyUI 0.3.x always; later ones only when they say something)."""
        described: dict[str, Any] = inputs_description(self.inputs)
        for kind in self.hidden:
            described.setdefault("hidden", {})[kind.name] = (kind.value,)
        info: dict[str, Any] = {
            "input": described,
            "input_order": {section: list(entries) for section, entries in described.items()},
            "output": [out.io_type for out in self.outputs],
            "output_is_list": [out.is_output_list for out in self.outputs],
            "output_name": [out.display_name or out.io_type for out in self.outputs],
            "output_tooltips": [out.tooltip or None for out in self.outputs],
            "name": self.node_id,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": python_module,
            "category": self.category,
            "output_node": self.is_output_node,
            "deprecated": self.is_deprecated,
            "experimental": self.is_experimental,
            "api_node": self.is_api_node,
        }
        matchtypes = [out.template.template_id if isinstance(out, MatchType.Output) else None for out in self.outputs]
        later = {"is_input_list": self.is_input_list or None, "search_aliases": self.search_aliases or None,
                 "output_matchtypes": matchtypes if any(matchtypes) else None, "dev_only": self.is_dev_only or None,
                 "essentials_category": self.essentials_category,
                 "has_intermediate_output": self.has_intermediate_output or None}
        return info | {key: value for key, value in later.items() if value is not None}


class NodeOutput:
    """A V3 node's result: one value per output, and optionally `ui=`, `expand=` (a graph), `block_execution=`."""

    def __init__(self, *args: Any, ui: Any = None, expand: dict | None = None,
                 block_execution: str | None = None) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args if self.args else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeOutput:
        """From the V1 `{"result": ..., "ui": ..., "expand": ...}` shape."""
        result = data.get("result", ())
        if isinstance(result, ExecutionBlocker):
            return cls(block_execution=result.message)
        return cls(*(result or ()), ui=data.get("ui"), expand=data.get("expand"))

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


class classproperty:  # noqa: N801 - reads like a property
    def __init__(self, getter: Any) -> None:
        self.getter = getter

    def __get__(self, instance: Any, owner: type) -> Any:
        return self.getter(owner)


class ComfyNode:
    """Base class of V3 nodes: override `define_schema` and `execute` (both classmethods)."""

    RELATIVE_PYTHON_MODULE: str | None = None
    SCHEMA: Schema | None = None
    hidden: HiddenHolder = HiddenHolder()

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs: Any) -> bool | str:
        """Override to check literal inputs: return True to accept, or a message (False) to reject."""
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs: Any) -> Any:
        """Override to key the cached output on outside state too (a file's hash): the value must change with it."""
        raise NotImplementedError

    @classmethod
    def check_lazy_status(cls, **kwargs: Any) -> list[str]:
        """Override to ask for lazy inputs: the ids still needed, given the values so far (None: not evaluated)."""
        return [name for name, value in kwargs.items() if value is None]

    # ---- the interface the engine reads -------------------------------------------------------------------

    @classmethod
    def GET_BASE_CLASS(cls) -> type:  # noqa: N802
        return ComfyNode

    @classmethod
    def overrides(cls, name: str) -> bool:
        """Whether the node defines `name` itself (the base class's stand-in means: the node has none)."""
        return getattr(cls, name).__func__ is not getattr(ComfyNode, name).__func__

    @classmethod
    def VALIDATE_CLASS(cls) -> None:  # noqa: N802
        for name in ("define_schema", "execute"):
            if not cls.overrides(name):
                raise TypeError(f"V3 node class {cls.__name__} defines no {name}()")

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # noqa: N802
        """The node's schema, defined afresh (combo choices may come from folders), finalized and checked."""
        cls.VALIDATE_CLASS()
        schema = cls.define_schema()
        if not isinstance(schema, Schema):
            raise TypeError(f"{cls.__name__}.define_schema() returned {type(schema).__name__}, not an io.Schema")
        schema.finalize()
        schema.validate()
        cls.SCHEMA = schema
        return schema

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict[str, Any]:  # noqa: N802
        return cls.GET_SCHEMA().node_info(cls.RELATIVE_PYTHON_MODULE or "nodes")

    @classmethod
    def INPUT_TYPES(cls, include_hidden: bool = True) -> dict[str, Any]:  # noqa: N802
        described = cls.GET_NODE_INFO_V1()["input"]
        if not include_hidden:
            described.pop("hidden", None)
        return described

    @classmethod
    def PREPARE_CLASS_CLONE(cls, hidden_inputs: dict[str, Any] | None) -> type[ComfyNode]:  # noqa: N802
        """A subclass for one call, holding its hidden values (so a call never sees another's)."""
        return type(cls.__name__, (cls,), {"hidden": HiddenHolder.from_dict(hidden_inputs),
                                           "__module__": cls.__module__, "__qualname__": cls.__qualname__})

    @classmethod
    def EXECUTE_NORMALIZED(cls, **kwargs: Any) -> NodeOutput:  # noqa: N802
        return cls._normalized(cls.execute(**kwargs))

    @classmethod
    async def EXECUTE_NORMALIZED_ASYNC(cls, **kwargs: Any) -> NodeOutput:  # noqa: N802
        return cls._normalized(await cls.execute(**kwargs))

    @classmethod
    def _normalized(cls, result: Any) -> NodeOutput:
        if result is None:
            result = NodeOutput()
        elif isinstance(result, tuple):
            result = NodeOutput(*result)
        elif isinstance(result, dict):
            result = NodeOutput.from_dict(result)
        elif isinstance(result, ExecutionBlocker):
            result = NodeOutput(block_execution=result.message)
        elif not isinstance(result, NodeOutput):
            raise TypeError(f"node {cls.__name__}: execute() returned {type(result).__name__}; "
                            f"expected an io.NodeOutput")
        schema = cls.SCHEMA or cls.GET_SCHEMA()
        if result.expand is not None and not schema.enable_expand:
            raise TypeError(f"node {cls.__name__} returned an expansion graph but its Schema does not set "
                            f"enable_expand=True")
        return result

    # ---- V1 attributes, for code that reads them off a node class ---------------------------------------------

    @classproperty
    def FUNCTION(cls) -> str:  # noqa: N802, N805
        return "EXECUTE_NORMALIZED_ASYNC" if inspect.iscoroutinefunction(cls.execute) else "EXECUTE_NORMALIZED"

    @classproperty
    def RETURN_TYPES(cls) -> tuple:  # noqa: N802, N805
        return tuple(out.io_type for out in cls.GET_SCHEMA().outputs)

    @classproperty
    def RETURN_NAMES(cls) -> tuple:  # noqa: N802, N805
        return tuple(out.display_name or out.io_type for out in cls.GET_SCHEMA().outputs)

    @classproperty
    def OUTPUT_IS_LIST(cls) -> tuple:  # noqa: N802, N805
        return tuple(out.is_output_list for out in cls.GET_SCHEMA().outputs)

    @classproperty
    def OUTPUT_TOOLTIPS(cls) -> tuple:  # noqa: N802, N805
        return tuple(out.tooltip for out in cls.GET_SCHEMA().outputs)

    @classproperty
    def CATEGORY(cls) -> str:  # noqa: N802, N805
        return cls.GET_SCHEMA().category

    @classproperty
    def DESCRIPTION(cls) -> str:  # noqa: N802, N805
        return cls.GET_SCHEMA().description

    @classproperty
    def OUTPUT_NODE(cls) -> bool:  # noqa: N802, N805
        return cls.GET_SCHEMA().is_output_node

    @classproperty
    def INPUT_IS_LIST(cls) -> bool:  # noqa: N802, N805
        return cls.GET_SCHEMA().is_input_list

    @classproperty
    def NOT_IDEMPOTENT(cls) -> bool:  # noqa: N802, N805
        return cls.GET_SCHEMA().not_idempotent

    @classproperty
    def DEPRECATED(cls) -> bool:  # noqa: N802, N805
        return cls.GET_SCHEMA().is_deprecated

    @classproperty
    def EXPERIMENTAL(cls) -> bool:  # noqa: N802, N805
        return cls.GET_SCHEMA().is_experimental

    @classproperty
    def API_NODE(cls) -> bool:  # noqa: N802, N805
        return cls.GET_SCHEMA().is_api_node


__all__ = ["Hidden", "HiddenHolder", "Schema", "NodeOutput", "ComfyNode", "classproperty"]
