"""sdgraph's built-in nodes as ComfyUI-convention classes, for packs that call or subclass ComfyUI's core nodes.

Each class has INPUT_TYPES, RETURN_TYPES, RETURN_NAMES, FUNCTION (ComfyUI's method name for that node, from
data/core_functions.json; "run" for nodes ComfyUI lacks), CATEGORY and OUTPUT_NODE, and that method runs the
built-in node: positional arguments in the order of its inputs, keyword arguments by name, omitted widgets at
their defaults. It runs in the node call in progress (its progress and interrupt), else in a context of its own.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdgraph.comfy_layer import binding
from sdgraph.context import NodeContext
from sdgraph.node import NodeDef, NodeOutput
from sdgraph.plugins import load_entry_points
from sdgraph.registry import Registry

_DATA = json.loads((Path(__file__).resolve().parent / "data" / "core_functions.json").read_text())
FUNCTIONS: dict[str, str] = _DATA["functions"]
IN_NODES_MODULE: list[str] = _DATA["nodes_module"]


def builtin_registry() -> Registry:
    registry = Registry()
    load_entry_points(registry, builtin=True)
    return registry


def _context() -> NodeContext:
    ctx = binding.context()
    if ctx is not None:
        return ctx
    return NodeContext("comfy-layer", "comfy-layer", binding.services(), binding.interrupt_flag())


def _arguments(node: NodeDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    visible = [spec for spec in node.spec.inputs if spec.section != "hidden"]
    if len(args) > len(visible):
        raise TypeError(f"{node.class_type}: takes {len(visible)} inputs, {len(args)} given")
    values = {spec.name: value for spec, value in zip(visible, args)}
    clash = set(values) & set(kwargs)
    if clash:
        raise TypeError(f"{node.class_type}: input {sorted(clash)[0]!r} given twice")
    values.update(kwargs)
    for spec in node.spec.inputs:
        if spec.name in values:
            continue
        if spec.section == "hidden" or (spec.section == "optional" and spec.default is None):
            values[spec.name] = None
        elif spec.default is not None:
            values[spec.name] = spec.default
        else:
            raise TypeError(f"{node.class_type}: missing required input {spec.name!r}")
    return values


def _comfy_result(raw: Any) -> Any:
    if isinstance(raw, NodeOutput):
        return {"ui": raw.ui, "result": tuple(raw.values)} if raw.ui else tuple(raw.values)
    return raw


def comfy_class(node: NodeDef) -> type:
    """A ComfyUI-convention class running `node`."""
    spec = node.spec
    function = next((FUNCTIONS[n] for n in (spec.class_type, *spec.aliases) if n in FUNCTIONS), "run")

    def INPUT_TYPES(cls: type) -> dict[str, Any]:
        return spec.describe(binding.dirs())["input"]

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _comfy_result(node.invoke(_arguments(node, args, kwargs), _context()))

    attrs: dict[str, Any] = {
        "INPUT_TYPES": classmethod(INPUT_TYPES), function: call, "FUNCTION": function,
        "RETURN_TYPES": tuple(o.type for o in spec.outputs), "RETURN_NAMES": tuple(o.name for o in spec.outputs),
        "OUTPUT_IS_LIST": tuple(o.is_list for o in spec.outputs), "CATEGORY": spec.category,
        "OUTPUT_NODE": spec.output_node, "DESCRIPTION": spec.description, "SDGRAPH_NODE": node,
    }
    for input_spec in spec.inputs:  # ComfyUI's classes list some combos as attributes (ImageScale.upscale_methods)
        if input_spec.name in ("upscale_method", "crop") and input_spec.choices:
            attrs["upscale_methods" if input_spec.name == "upscale_method" else "crop_methods"] = \
                list(input_spec.choices)
    return type(spec.class_type, (), attrs)


def core_classes(registry: Registry) -> dict[str, type]:
    """A ComfyUI-convention class for every built-in node, by class_type (and by ComfyUI alias)."""
    classes = {name: comfy_class(node) for name, node in registry.nodes.items()}
    for alias, target in registry.aliases.items():
        if target in classes:
            classes.setdefault(alias, classes[target])
    return classes
