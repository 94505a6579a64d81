"""Run ComfyUI-convention node classes unchanged.

A plain class with INPUT_TYPES / RETURN_TYPES / RETURN_NAMES / FUNCTION / CATEGORY / OUTPUT_NODE / IS_CHANGED /
VALIDATE_INPUTS (and OUTPUT_IS_LIST, INPUT_IS_LIST, DESCRIPTION, OUTPUT_TOOLTIPS) compiles into a `NodeDef`.
"""
from __future__ import annotations

import inspect
from typing import Any

from sdgraph.context import NodeContext, node_context_bound
from sdgraph.node import NodeDeclarationError, NodeDef
from sdgraph.spec import InputSpec, NodeSpec, OutputSpec
from sdgraph.types import COMBO

_WIDGET_KEYS = {"default", "min", "max", "step", "multiline", "tooltip", "forceInput"}


def is_comfy_class(obj: Any) -> bool:
    return inspect.isclass(obj) and hasattr(obj, "INPUT_TYPES") and hasattr(obj, "RETURN_TYPES")


def define_comfy(class_type: str, cls: type, display_name: str | None = None, pack: str = "custom") -> NodeDef:
    where = f"node {class_type}"
    try:
        declared = cls.INPUT_TYPES()
    except Exception as exc:
        raise NodeDeclarationError(f"{where}: INPUT_TYPES() raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(declared, dict):
        raise NodeDeclarationError(f"{where}: INPUT_TYPES() must return a dict, got {type(declared).__name__}")
    function_name = getattr(cls, "FUNCTION", None)
    if not isinstance(function_name, str) or not callable(getattr(cls, function_name, None)):
        raise NodeDeclarationError(f"{where}: FUNCTION must name a method of the class (got {function_name!r})")
    spec = NodeSpec(
        class_type=class_type,
        display_name=display_name or class_type,  # ComfyUI shows the class name when a pack gives none
        description=str(getattr(cls, "DESCRIPTION", "") or ""),
        category=str(getattr(cls, "CATEGORY", "custom")),
        inputs=_inputs(cls, declared, where),
        outputs=_outputs(cls, where),
        output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
        input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
        python_module=NodeSpec.module_of(pack),
        deprecated=bool(getattr(cls, "DEPRECATED", False)),
        experimental=bool(getattr(cls, "EXPERIMENTAL", False)),
    )

    def invoke(inputs: dict[str, Any], ctx: NodeContext) -> Any:
        with node_context_bound(ctx):  # ComfyUI-style code finds progress and interrupt through module functions
            return getattr(_instance(cls, ctx), function_name)(**inputs)

    def lazy_check(inputs: dict[str, Any], ctx: NodeContext) -> Any:
        with node_context_bound(ctx):
            return _instance(cls, ctx).check_lazy_status(**inputs)

    validate, custom = _validator(cls)
    return NodeDef(spec=spec, invoke=invoke, fingerprint=_fingerprinter(cls), validate=validate,
                   custom_validated=custom, pack=pack, cls=cls,
                   lazy_check=lazy_check if callable(getattr(cls, "check_lazy_status", None)) else None,
                   is_async=inspect.iscoroutinefunction(getattr(cls, function_name)),
                   extra_input=_extra_inputs(cls, declared, where))


def _instance(cls: type, ctx: NodeContext | None) -> Any:
    return ctx.instance(cls) if ctx is not None else cls()


def _inputs(cls: type, declared: dict[str, Any], where: str) -> tuple[InputSpec, ...]:
    specs: list[InputSpec] = []
    for section in ("required", "optional", "hidden"):
        entries = declared.get(section) or {}
        if not isinstance(entries, dict):
            raise NodeDeclarationError(f"{where}: INPUT_TYPES()[{section!r}] must be a dict")
        for name, entry in entries.items():
            specs.append(_input(cls, section, name, entry, where))
    return tuple(specs)


_PROBE = "\x00sdgraph-undeclared-probe"


def _extra_inputs(cls: type, declared: dict[str, Any], where: str) -> Any:
    """For a section that claims every name (a dict whose `in` says yes to any): the spec of an undeclared input.

    ComfyUI passes such inputs to the function (a link's value of any type, a literal as it is); the spec is
    an optional socket of the type the section gives for the name (a hidden section's are any type).
    """
    open_sections = [section for section in ("required", "optional", "hidden")
                     if isinstance(entries := declared.get(section), dict) and _claims_all(entries)]
    if not open_sections:
        return None

    def extra(name: str) -> InputSpec | None:
        section = open_sections[0]
        entry = declared[section][name] if section != "hidden" else ("*",)
        if not isinstance(entry, (tuple, list)) or not entry or not isinstance(entry[0], str):
            entry = ("*",)
        return _input(cls, "optional", name, (str(entry[0]) or "*", *entry[1:2]), where)

    return extra


def _claims_all(entries: dict[str, Any]) -> bool:
    try:
        return _PROBE in entries
    except Exception:  # a section that cannot answer claims nothing
        return False


def _input(cls: type, section: str, name: str, entry: Any, where: str) -> InputSpec:
    if section == "hidden":
        kind = entry if isinstance(entry, str) else str(entry[0])
        return InputSpec(name=name, type=kind, section="hidden", hidden_kind=kind)
    if isinstance(entry, str):
        entry = (entry,)
    if not isinstance(entry, (tuple, list)) or not entry:
        raise NodeDeclarationError(f"{where}: input {name!r} must be (TYPE, {{options}}), got {entry!r}")
    head = entry[0]
    opts = dict(entry[1]) if len(entry) > 1 and isinstance(entry[1], dict) else {}
    fields: dict[str, Any] = {key: opts.pop(key) for key in ("default", "min", "max", "step", "tooltip") if key in opts}
    # kept in `opts` as stated: ComfyUI describes an input with the options the class wrote, False ones included
    extra = {"multiline": bool(opts.get("multiline", False)), "force_input": bool(opts.get("forceInput", False))}
    if isinstance(head, (list, tuple)):
        choices = tuple(head)
        if "default" not in fields:  # a client picks the first choice; the description stays as the class wrote it
            fields.update(default=choices[0] if choices else None, implied_default=True)
        return InputSpec(name=name, type=COMBO, section=section, choices=choices,
                         choices_from=_fresh_choices(cls, section, name), options=opts, **fields, **extra)
    if not isinstance(head, str):
        raise NodeDeclarationError(f"{where}: input {name!r} has type {head!r}; expected a type name or a list")
    return InputSpec(name=name, type=head, section=section, options=opts, **fields, **extra)


def _fresh_choices(cls: type, section: str, name: str):
    """Combo lists in INPUT_TYPES often come from folders: re-read them whenever they are needed."""

    def choices(dirs: Any) -> list[Any]:
        return list(cls.INPUT_TYPES()[section][name][0])

    return choices


def _outputs(cls: type, where: str) -> tuple[OutputSpec, ...]:
    types = getattr(cls, "RETURN_TYPES", ())
    if not isinstance(types, (tuple, list)):
        raise NodeDeclarationError(f"{where}: RETURN_TYPES must be a tuple")
    names = getattr(cls, "RETURN_NAMES", None) or ()
    is_list = getattr(cls, "OUTPUT_IS_LIST", None) or ()
    tooltips = getattr(cls, "OUTPUT_TOOLTIPS", None) or ()
    outputs = []
    for i, type_ in enumerate(types):
        choices = tuple(type_) if isinstance(type_, (list, tuple)) else None
        type_name = COMBO if choices is not None else str(type_)
        outputs.append(OutputSpec(
            type=type_name,
            choices=choices,
            name=str(names[i]) if i < len(names) else type_name,
            is_list=bool(is_list[i]) if i < len(is_list) else False,
            tooltip=tooltips[i] if i < len(tooltips) else None,
        ))
    return tuple(outputs)


def _call_with_known(func: Any, literals: dict[str, Any]) -> Any:
    """Call a classmethod with the inputs its signature names; names it takes but we lack arrive as None."""
    params = inspect.signature(func).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return func(**literals)
    kwargs = {name: literals.get(name) for name, p in params.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and (name in literals or p.default is p.empty)}
    return func(**kwargs)


def _fingerprinter(cls: type):
    if not hasattr(cls, "IS_CHANGED"):
        return None
    return lambda literals, dirs: _call_with_known(cls.IS_CHANGED, literals)


def _validator(cls: type):
    """VALIDATE_INPUTS, and the inputs it takes over (ComfyUI skips built-in range/list checks for those)."""
    func = getattr(cls, "VALIDATE_INPUTS", None)
    if func is None:
        return None, frozenset()
    params = inspect.signature(func).parameters
    custom = frozenset(n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return (lambda literals, dirs: _call_with_known(func, literals)), custom
