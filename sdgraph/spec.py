"""The one declaration of a node's interface: inputs, outputs and flags, as pydantic data.

Both node styles (native `Node` subclasses and ComfyUI-convention classes) compile into a `NodeSpec`.
Validation, signatures, the executor and `/object_info` all read this one description.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from sdgraph.paths import Dirs
from sdgraph.types import COMBO

Section = Literal["required", "optional", "hidden"]


class InputSpec(BaseModel):
    """One named input: a typed socket, or a literal widget (INT, FLOAT, STRING, BOOLEAN, COMBO)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    type: str
    section: Section = "required"
    default: Any = None
    # True when `default` is the value ComfyUI's clients assume by themselves (a combo's first choice, an empty
    # string): /object_info then leaves it out, as ComfyUI's own description of the node does.
    implied_default: bool = False
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    multiline: bool = False
    tooltip: str | None = None
    choices: tuple[Any, ...] | None = None
    choices_from: Callable[[Dirs], list[Any]] | None = Field(default=None, exclude=True)
    force_input: bool = False
    hidden_kind: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def lazy(self) -> bool:
        """A linked input evaluated only when the node's lazy check asks for it (`lazy=True`)."""
        return bool(self.options.get("lazy"))

    @property
    def raw_link(self) -> bool:
        """The node receives the link `[source_id, index]` itself, not the value behind it (`rawLink=True`)."""
        return bool(self.options.get("rawLink"))

    def current_choices(self, dirs: Dirs | None = None) -> list[Any]:
        """The allowed values of a combo, re-read when they come from outside state (files on disk)."""
        if self.choices_from is not None:
            return list(self.choices_from(dirs or Dirs()))
        return list(self.choices or ())

    def describe(self, dirs: Dirs | None = None) -> list[Any] | str:
        """The `/object_info` entry: `[TYPE, {options}]`, or `[[choices], {options}]` for a combo."""
        if self.section == "hidden":
            return self.hidden_kind or self.type
        opts: dict[str, Any] = dict(self.options)
        for key in ("default", "min", "max", "step", "tooltip"):
            value = getattr(self, key)
            if value is not None and not (key == "default" and self.implied_default):
                opts[key] = value
        if self.multiline:
            opts["multiline"] = True
        if self.force_input:
            opts["forceInput"] = True
        head: Any = self.current_choices(dirs) if self.type == COMBO else self.type
        return [head, opts] if opts else [head]


class OutputSpec(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: str
    name: str
    is_list: bool = False
    tooltip: str | None = None
    # a COMBO output declared by its list of values (a ComfyUI class's RETURN_TYPES); described as that list
    choices: tuple[Any, ...] | None = None

    def describe(self) -> Any:
        return list(self.choices) if self.choices is not None else self.type


class NodeSpec(BaseModel):
    """Everything the engine and its clients know about a node class, without running it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    class_type: str
    display_name: str
    description: str = ""
    category: str = "sdgraph"
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    output_node: bool = False
    not_idempotent: bool = False
    input_is_list: bool = False
    aliases: tuple[str, ...] = ()
    python_module: str = "sdgraph"
    deprecated: bool = False
    experimental: bool = False
    # a node style that describes itself (ComfyUI's V3 classes) gives its own `/object_info` entry
    described: Callable[[Dirs | None], dict[str, Any]] | None = Field(default=None, exclude=True)

    @staticmethod
    def module_of(pack: str) -> str:
        """What `/object_info` gives as a pack's `python_module`: ComfyUI's dotted `custom_nodes.<folder>` for a
        custom_nodes/ pack (the frontend reads the pack's name from it), else the pack's own name."""
        return pack.replace("/", ".", 1) if pack.startswith("custom_nodes/") else pack

    @cached_property
    def inputs_by_name(self) -> dict[str, InputSpec]:
        return {spec.name: spec for spec in self.inputs}

    @cached_property
    def has_hidden(self) -> bool:
        return any(spec.section == "hidden" for spec in self.inputs)

    @cached_property
    def has_list_output(self) -> bool:
        return any(spec.is_list for spec in self.outputs)

    def describe(self, dirs: Dirs | None = None) -> dict[str, Any]:
        """This node in the `/object_info` shape that editors and API clients read."""
        if self.described is not None:
            return self.described(dirs)
        sections: dict[str, dict[str, Any]] = {"required": {}, "optional": {}, "hidden": {}}
        order: dict[str, list[str]] = {"required": [], "optional": [], "hidden": []}
        for spec in self.inputs:
            sections[spec.section][spec.name] = spec.describe(dirs)
            order[spec.section].append(spec.name)
        info: dict[str, Any] = {
            "input": {key: value for key, value in sections.items() if value or key == "required"},
            "input_order": {key: value for key, value in order.items() if value or key == "required"},
            "output": [out.describe() for out in self.outputs],
            "output_is_list": [out.is_list for out in self.outputs],
            "output_name": [out.name for out in self.outputs],
            "name": self.class_type,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        }
        tooltips = [out.tooltip for out in self.outputs]
        if any(tooltips):
            info["output_tooltips"] = tooltips
        if self.deprecated:
            info["deprecated"] = True
        if self.experimental:
            info["experimental"] = True
        return info
