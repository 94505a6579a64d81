"""V3 inputs whose shape is not one fixed socket: MultiType, MatchType, Autogrow and DynamicCombo.

- `MultiType.Input(id, [io.Int, io.Float])`: one socket accepting any of several wire names ("INT,FLOAT").
- `MatchType`: inputs and outputs sharing a template take whichever allowed type is connected.
- `Autogrow.Input(id, template=...)`: a row of sockets cloned from one template input; `execute` gets them as a
  dict by slot name. In a prompt the slots are keyed "<id>.<name>".
- `DynamicCombo.Input(id, options=[Option(key, inputs)])`: a combo whose choice brings its own inputs; `execute`
  gets `{id: key, <input id>: value, ...}`. In a prompt the choice's inputs are keyed "<id>.<input id>".

Autogrow and DynamicCombo describe their nested inputs inside their own entry (the shape ComfyUI >= 0.8 gives);
the executor side reads those descriptions back (sdgraph.comfy_v3).
"""
from __future__ import annotations

import copy
from typing import Any

from ._iotypes import ComfyTypeI, ComfyTypeIO, Input, Output, WidgetInput, _ComfyType, comfytype, pruned
from ._iotypes import AnyType  # type: ignore[attr-defined]  # noqa: F401 - made by _iotypes' table

AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"
MULTI_TYPE = "COMFY_MULTITYPED_V3"


def inputs_description(inputs: list[Input]) -> dict[str, dict[str, Any]]:
    """Inputs as `{"required": {id: [type, options]}, "optional": {...}}` (the shape of INPUT_TYPES)."""
    described: dict[str, dict[str, Any]] = {"required": {}}
    for item in inputs:
        options = item.as_dict()
        options.pop("optional", None)
        described.setdefault("optional" if item.optional else "required", {})[item.id] = (item.get_io_type(), options)
    return described


class DynamicInput(Input):
    """An input standing for several (described within its own entry)."""


class DynamicOutput(Output):
    pass


def _as_type(entry: Any) -> type:
    return entry if isinstance(entry, type) else type(entry)


@comfytype(io_type=MULTI_TYPE)
class MultiType:
    Type = Any

    class Input(Input):
        """A socket accepting several types; pass a widget input as `id` to keep its widget (with its options)."""

        def __init__(self, id: str | Input, types: list, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, extra_dict: dict | None = None,
                     raw_link: bool | None = None, advanced: bool | None = None) -> None:
            self.input_override: Input | None = None
            if isinstance(id, Input):
                base = copy.copy(id)
                optional = True if id.optional else optional
                tooltip = id.tooltip if id.tooltip is not None else tooltip
                display_name = id.display_name if id.display_name is not None else display_name
                lazy = id.lazy if id.lazy is not None else lazy
                if isinstance(base, WidgetInput):
                    base.widget_type = base.get_io_type()
                self.input_override, id = base, id.id
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
            self._io_types = list(types)

        @property
        def io_types(self) -> list[type]:
            return [_as_type(entry) for entry in self._io_types]

        def get_io_type(self) -> str:
            names = [str(t.io_type) for t in self.io_types]
            if self.input_override is not None:
                names.insert(0, str(self.input_override.get_io_type()))
            return ",".join(dict.fromkeys(names))

        def as_dict(self) -> dict[str, Any]:
            own = super().as_dict()
            return self.input_override.as_dict() | own if self.input_override is not None else own


@comfytype(io_type=MATCH_TYPE)
class MatchType(ComfyTypeIO):
    class Template:
        """The types an input/output pair may take; they take the same one."""

        def __init__(self, template_id: str, allowed_types: Any = None) -> None:
            if allowed_types is None:
                allowed_types = [AnyType]
            if not isinstance(allowed_types, (list, tuple)):
                allowed_types = [allowed_types]
            for entry in allowed_types:
                if not issubclass(_as_type(entry), _ComfyType):
                    raise ValueError(f"MatchType.Template {template_id!r}: allowed types must be socket types "
                                     f"(io.Image, ...), got {entry!r}")
            self.template_id = template_id
            self.allowed_types = list(allowed_types)

        def as_dict(self) -> dict[str, Any]:
            return {"template_id": self.template_id,
                    "allowed_types": ",".join(str(_as_type(t).io_type) for t in self.allowed_types)}

    class Input(DynamicInput):
        def __init__(self, id: str, template: MatchType.Template, display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict | None = None, raw_link: bool | None = None,
                     advanced: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
            self.template = template

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"template": self.template.as_dict()}

    class Output(DynamicOutput):
        def __init__(self, template: MatchType.Template, id: str | None = None, display_name: str | None = None,
                     tooltip: str | None = None, is_output_list: bool = False) -> None:
            if not id and not display_name:
                display_name = "MATCHTYPE"
            super().__init__(id, display_name, tooltip, is_output_list)
            self.template = template

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"template": self.template.as_dict()}


@comfytype(io_type=AUTOGROW)
class Autogrow(ComfyTypeI):
    Type = dict
    MAX_SLOTS = 100

    class _Template:
        def __init__(self, input: Input) -> None:
            if isinstance(input, DynamicInput):
                raise ValueError("an Autogrow template must be a plain input")
            self.input = copy.copy(input)
            if isinstance(self.input, WidgetInput):
                self.input.force_input = True  # grown slots are sockets
            self.names: list[str] = []
            self.min = 1

        def slots(self) -> list[Input]:
            grown = []
            for name in self.names:
                slot = copy.copy(self.input)
                slot.id = name
                grown.append(slot)
            return grown

        def as_dict(self) -> dict[str, Any]:
            return {"input": inputs_description([self.input])}

    class TemplatePrefix(_Template):
        """Slots named prefix0, prefix1, ... up to `max`."""

        def __init__(self, input: Input, prefix: str, min: int = 1, max: int = 10) -> None:
            super().__init__(input)
            if not (0 <= min and 1 <= max <= Autogrow.MAX_SLOTS):
                raise ValueError(f"Autogrow.TemplatePrefix: min {min} / max {max} out of range")
            self.prefix, self.min, self.max = prefix, min, max
            self.names = [f"{prefix}{i}" for i in range(max)]

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"prefix": self.prefix, "min": self.min, "max": self.max}

    class TemplateNames(_Template):
        """Slots with the given names."""

        def __init__(self, input: Input, names: list[str], min: int = 1) -> None:
            super().__init__(input)
            if min < 0:
                raise ValueError(f"Autogrow.TemplateNames: min {min} is negative")
            self.names, self.min = list(names)[:Autogrow.MAX_SLOTS], min

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"names": self.names, "min": self.min}

    class Input(DynamicInput):
        def __init__(self, id: str, template: Any, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, extra_dict: dict | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.template = template

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | {"template": self.template.as_dict()}

        def get_all(self) -> list[Input]:
            return [self, *self.template.slots()]


@comfytype(io_type=DYNAMIC_COMBO)
class DynamicCombo(ComfyTypeI):
    Type = dict

    class Option:
        """One choice of a DynamicCombo and the inputs it brings."""

        def __init__(self, key: str, inputs: list[Input]) -> None:
            self.key, self.inputs = key, list(inputs)

        def as_dict(self) -> dict[str, Any]:
            return {"key": self.key, "inputs": inputs_description(self.inputs)}

    class Input(DynamicInput):
        def __init__(self, id: str, options: list[DynamicCombo.Option], display_name: str | None = None,
                     optional: bool = False, tooltip: str | None = None, lazy: bool | None = None,
                     extra_dict: dict | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
            self.options = list(options)

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | pruned({"options": [option.as_dict() for option in self.options]})

        def get_all(self) -> list[Input]:
            return [self, *(item for option in self.options for item in option.inputs)]


__all__ = ["DynamicInput", "DynamicOutput", "MultiType", "MatchType", "Autogrow", "DynamicCombo",
           "inputs_description"]
