"""Run ComfyUI V3 node classes (`comfy_api.latest.io.ComfyNode`) unchanged: compile one into a `NodeDef`.

Works on the interface every V3 class answers in ComfyUI's own names, never on the compatibility layer's code:
`GET_NODE_INFO_V1()` (the node's `/object_info` entry, which the NodeSpec then gives out as it is),
`PREPARE_CLASS_CLONE(hidden)` (a class for one call), `EXECUTE_NORMALIZED[_ASYNC]` (its result as a NodeOutput
with `args`, `ui`, `expand`, `block_execution`), and the classmethods `check_lazy_status`, `fingerprint_inputs`,
`validate_inputs`, used when the class overrides them.

The inputs come from that entry. Autogrow and DynamicCombo inputs hold nested inputs in their own entries; a
prompt gives those as flat keys ("<id>.<name>"), each one an input of the NodeSpec here, and `execute` receives
them nested again: `method={"method": "<chosen key>", "<input>": value}`, `values={"a": ..., "b": ...}`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from dataclasses import dataclass, field
from typing import Any

from sdgraph.context import NodeContext, node_context_bound
from sdgraph.node import ExecutionBlocker, NodeDeclarationError, NodeDef, NodeOutput
from sdgraph.spec import InputSpec, NodeSpec, OutputSpec
from sdgraph.types import ANY, COMBO

AUTOGROW = "COMFY_AUTOGROW_V3"
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"
_PROTOCOL = ("GET_SCHEMA", "GET_NODE_INFO_V1", "PREPARE_CLASS_CLONE", "EXECUTE_NORMALIZED", "define_schema")


def is_v3_class(obj: Any) -> bool:
    return inspect.isclass(obj) and all(callable(getattr(obj, name, None)) for name in _PROTOCOL)


def v3_node_id(cls: type) -> str:
    return str(cls.GET_SCHEMA().node_id)


# ---- the input tree ----------------------------------------------------------------------------------------


@dataclass
class _Leaf:
    key: str  # the prompt's key
    id: str  # the name execute (or the enclosing dict) receives it under
    default: Any = None


@dataclass
class _Choice:
    """A DynamicCombo: the chosen key selects which nested inputs `execute` receives."""

    key: str
    id: str
    options: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class _Grow:
    """An Autogrow: its slots that the prompt fills, by slot name."""

    key: str
    id: str
    slots: list[_Leaf] = field(default_factory=list)


class _Compiler:
    def __init__(self, cls: type, where: str) -> None:
        self.cls, self.where = cls, where
        self.specs: dict[str, InputSpec] = {}
        self.unchecked: set[str] = set()  # nested inputs whose declaration depends on the choice made

    def walk(self, described: dict[str, Any], prefix: str = "", nested: bool = False) -> list[Any]:
        tree = []
        for section in ("required", "optional"):
            for input_id, entry in (described.get(section) or {}).items():
                type_, options = self._entry(input_id, entry)
                tree.append(self.one(input_id, type_, options, "optional" if nested else section, prefix, nested))
        return tree

    def _entry(self, input_id: str, entry: Any) -> tuple[Any, dict[str, Any]]:
        if isinstance(entry, str):
            return entry, {}
        if not isinstance(entry, (list, tuple)) or not entry:
            raise NodeDeclarationError(f"{self.where}: input {input_id!r} is described as {entry!r}")
        return entry[0], dict(entry[1]) if len(entry) > 1 and isinstance(entry[1], dict) else {}

    def one(self, input_id: str, type_: Any, options: dict[str, Any], section: str, prefix: str,
            nested: bool) -> Any:
        key = f"{prefix}{input_id}"
        if type_ == DYNAMIC_COMBO:
            choices = {option["key"]: option.get("inputs") or {} for option in options.get("options") or []}
            self.add(InputSpec(name=key, type=COMBO, section=section, choices=tuple(choices),
                               default=next(iter(choices), None), implied_default=True,
                               tooltip=options.get("tooltip"), options=options), nested)
            return _Choice(key, input_id, {name: self.walk(inner, f"{key}.", nested=True)
                                           for name, inner in choices.items()})
        if type_ == AUTOGROW:
            return self.grow(key, input_id, options, section, nested)
        spec = self.leaf(key, type_, options, section)
        self.add(spec, nested)
        return _Leaf(key, input_id, spec.default)

    def grow(self, key: str, input_id: str, options: dict[str, Any], section: str, nested: bool) -> _Grow:
        template = options.get("template") or {}
        found = [(sec, name, entry) for sec, entries in (template.get("input") or {}).items()
                 for name, entry in (entries or {}).items()]
        if not found:
            raise NodeDeclarationError(f"{self.where}: Autogrow input {key!r} has no template input")
        template_section, _, entry = found[0]
        if "names" in template:
            names = list(template["names"])
        else:
            names = [f"{template.get('prefix', '')}{i}" for i in range(int(template.get("max", 1)))]
        least = int(template.get("min", 1))
        type_, slot_options = self._entry(key, entry)
        slots = []
        for index, name in enumerate(names):
            required = index < least and template_section == "required" and section == "required"
            spec = self.leaf(f"{key}.{name}", type_, slot_options, "required" if required else "optional")
            self.add(spec, nested)
            slots.append(_Leaf(spec.name, name, spec.default))
        return _Grow(key, input_id, slots)

    def leaf(self, key: str, type_: Any, options: dict[str, Any], section: str) -> InputSpec:
        common: dict[str, Any] = dict(name=key, section=section, tooltip=options.get("tooltip"), options=options,
                                      force_input=bool(options.get("forceInput")),
                                      multiline=bool(options.get("multiline")))
        if type_ == COMBO or isinstance(type_, (list, tuple)):
            choices = tuple(options.get("options") or ()) if type_ == COMBO else tuple(type_)
            default = options.get("default")
            if options.get("multi_select"):
                self.unchecked.add(key)  # a list of choices
            return InputSpec(type=COMBO, choices=choices, choices_from=self.fresh_choices(key),
                             default=choices[0] if default is None and choices else default,
                             implied_default=default is None, **common)
        if type_ == MATCH_TYPE:
            allowed = str((options.get("template") or {}).get("allowed_types") or ANY)
            type_ = ANY if ANY in allowed.split(",") else allowed
        return InputSpec(type=str(type_), default=options.get("default"), min=options.get("min"),
                         max=options.get("max"), step=options.get("step"), **common)

    def add(self, spec: InputSpec, nested: bool) -> None:
        if spec.name in self.specs:  # the same nested input under several choices: checked by the node's inputs
            self.unchecked.add(spec.name)
            return
        self.specs[spec.name] = spec
        if nested:
            self.unchecked.add(spec.name)

    def fresh_choices(self, key: str):
        """Combo choices come from define_schema, which may read folders: re-read them when needed."""
        cls = self.cls

        def choices(dirs: Any) -> list[Any]:
            compiler = _Compiler(cls, self.where)
            compiler.walk(cls.GET_NODE_INFO_V1()["input"])
            return list(compiler.specs[key].choices or ())

        return choices


def _nest(tree: list[Any], flat: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments `execute` takes, from the prompt's flat inputs."""
    out: dict[str, Any] = {}
    for node in tree:
        if isinstance(node, _Leaf):
            if node.key in flat:
                out[node.id] = flat[node.key]
        elif isinstance(node, _Grow):
            out[node.id] = {slot.id: flat[slot.key] for slot in node.slots if slot.key in flat}
        elif node.key in flat:
            chosen = flat[node.key]
            inner = node.options.get(chosen, [])
            defaults = {leaf.key: leaf.default for leaf in inner if isinstance(leaf, _Leaf) and leaf.default is not None}
            out[node.id] = {node.id: chosen, **_nest(inner, {**defaults, **flat})}
    return out


# ---- the NodeDef -------------------------------------------------------------------------------------------


def define_v3(cls: type, pack: str = "custom", class_type: str | None = None) -> NodeDef:
    """Compile a V3 class; `class_type` is the name it is registered under (default: its node_id)."""
    where = f"node {class_type or getattr(cls, '__name__', cls)}"
    if vars(cls).get("RELATIVE_PYTHON_MODULE") is None:  # its own, not one inherited from another pack's class
        cls.RELATIVE_PYTHON_MODULE = pack.replace("/", ".")  # what ComfyUI names a custom_nodes pack's module
    try:
        info = cls.GET_NODE_INFO_V1()
        schema = cls.GET_SCHEMA()
    except Exception as exc:
        raise NodeDeclarationError(f"{where}: define_schema() failed: {type(exc).__name__}: {exc}") from exc
    class_type = class_type or str(info["name"])
    compiler = _Compiler(cls, f"node {class_type}")
    tree = compiler.walk(info["input"])
    # keyed apart from the inputs: an output node's hidden "prompt" must not take the place of an input "prompt"
    hidden = {f"hidden:{name}": str(entry[0] if isinstance(entry, (list, tuple)) else entry)
              for name, entry in (info["input"].get("hidden") or {}).items()}
    inputs = [*compiler.specs.values(),
              *(InputSpec(name=name, type=kind, section="hidden", hidden_kind=kind) for name, kind in hidden.items())]
    spec = NodeSpec(
        class_type=class_type, display_name=str(info.get("display_name") or class_type),
        description=str(info.get("description") or ""), category=str(info.get("category") or "sd"),
        inputs=tuple(inputs), outputs=_outputs(info), output_node=bool(info.get("output_node")),
        not_idempotent=bool(schema.not_idempotent), input_is_list=bool(schema.is_input_list),
        python_module=str(info.get("python_module") or NodeSpec.module_of(pack)), deprecated=bool(info.get("deprecated")),
        experimental=bool(info.get("experimental")), described=lambda dirs: cls.GET_NODE_INFO_V1())
    call = _Caller(cls, tree, hidden, len(spec.outputs))
    is_async = inspect.iscoroutinefunction(getattr(cls, "execute", None))
    validate, custom = _validator(cls, call)
    return NodeDef(spec=spec, invoke=call.run_async if is_async else call.run, fingerprint=_fingerprinter(cls, call),
                   validate=validate, custom_validated=custom | frozenset(compiler.unchecked), pack=pack, cls=cls,
                   lazy_check=call.lazy if _overrides(cls, "check_lazy_status") else None, is_async=is_async)


def _outputs(info: dict[str, Any]) -> tuple[OutputSpec, ...]:
    names, is_list, tooltips = info.get("output_name") or [], info.get("output_is_list") or [], \
        info.get("output_tooltips") or []
    matched = info.get("output_matchtypes") or []
    outputs = []
    for index, type_ in enumerate(info.get("output") or []):
        type_name = COMBO if isinstance(type_, (list, tuple)) else str(type_)
        if type_name == MATCH_TYPE or (index < len(matched) and matched[index]):
            type_name = ANY  # takes the type its template's inputs are given
        outputs.append(OutputSpec(type=type_name, name=str(names[index]) if index < len(names) else type_name,
                                  is_list=bool(is_list[index]) if index < len(is_list) else False,
                                  tooltip=tooltips[index] if index < len(tooltips) else None))
    return tuple(outputs)


def _overrides(cls: type, name: str) -> bool:
    base = cls.GET_BASE_CLASS() if callable(getattr(cls, "GET_BASE_CLASS", None)) else None
    mine = getattr(getattr(cls, name, None), "__func__", None)
    return mine is not None and mine is not getattr(getattr(base, name, None), "__func__", None)


class _Caller:
    """Calls the class for one node call: hidden values onto a clone, flat prompt keys nested for execute."""

    def __init__(self, cls: type, tree: list[Any], hidden: dict[str, str], outputs: int) -> None:
        self.cls, self.tree, self.hidden, self.outputs = cls, tree, hidden, outputs

    def clone(self, inputs: dict[str, Any]) -> tuple[type, dict[str, Any]]:
        values = dict(inputs)
        hidden = {kind: values.pop(name, None) for name, kind in self.hidden.items()}
        return self.cls.PREPARE_CLASS_CLONE(hidden), _nest(self.tree, values)

    def run(self, inputs: dict[str, Any], ctx: NodeContext) -> Any:
        clone, kwargs = self.clone(inputs)
        with node_context_bound(ctx):
            return _as_node_output(clone.EXECUTE_NORMALIZED(**kwargs), self.outputs)

    def run_async(self, inputs: dict[str, Any], ctx: NodeContext) -> Any:
        clone, kwargs = self.clone(inputs)

        async def run() -> Any:
            with node_context_bound(ctx):
                return _as_node_output(await clone.EXECUTE_NORMALIZED_ASYNC(**kwargs), self.outputs)

        return run()

    def lazy(self, inputs: dict[str, Any], ctx: NodeContext) -> Any:
        clone, kwargs = self.clone(inputs)
        with node_context_bound(ctx):
            return clone.check_lazy_status(**kwargs)

    def literals(self, literals: dict[str, Any]) -> dict[str, Any]:
        return _nest(self.tree, literals)


def _as_node_output(result: Any, outputs: int) -> NodeOutput:
    ui = result.ui
    if ui is not None and not isinstance(ui, dict):
        ui = ui.as_dict()  # a ui.PreviewImage, ui.PreviewText ...
    if ui is not None:  # ("text",) as a list, so that the UI of a node's several calls adds up
        ui = {key: list(value) if isinstance(value, tuple) else value for key, value in ui.items()}
    values = tuple(result.args)
    if result.block_execution is not None:
        values = (ExecutionBlocker(result.block_execution),) * outputs
    return NodeOutput(values=values, ui=ui, expand=result.expand)


def _call_known(func: Any, values: dict[str, Any]) -> Any:
    """Call with the values the function's signature names (all of them when it takes **kwargs)."""
    params = inspect.signature(func).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return func(**values)
    return func(**{name: values.get(name) for name, p in params.items()
                   if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and (name in values or p.default is p.empty)})


def _fingerprinter(cls: type, call: _Caller):
    if not _overrides(cls, "fingerprint_inputs"):
        return None
    return lambda literals, dirs: _call_known(cls.PREPARE_CLASS_CLONE({}).fingerprint_inputs, call.literals(literals))


def _validator(cls: type, call: _Caller):
    """validate_inputs, and the inputs it names (which skip the built-in range and choice checks, as in ComfyUI)."""
    if not _overrides(cls, "validate_inputs"):
        return None, frozenset()
    params = inspect.signature(cls.validate_inputs).parameters
    named = frozenset(n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return (lambda literals, dirs: _call_known(cls.PREPARE_CLASS_CLONE({}).validate_inputs,
                                               call.literals(literals))), named


# ---- ComfyUI's V3 pack convention: `async def comfy_entrypoint() -> ComfyExtension` ---------------------------


def _run_coroutine(coroutine: Any) -> Any:
    """Run to completion from synchronous code, also where this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def entrypoint_mappings(entrypoint: Any) -> dict[str, type]:
    """The node classes a pack's comfy_entrypoint gives, by node_id (what ComfyUI registers them under)."""
    async def nodes() -> Any:
        extension = entrypoint()
        if inspect.isawaitable(extension):
            extension = await extension
        if not callable(getattr(extension, "get_node_list", None)):
            raise TypeError(f"comfy_entrypoint() returned {type(extension).__name__}, not a ComfyExtension")
        if callable(getattr(extension, "on_load", None)):
            await extension.on_load()
        return await extension.get_node_list()

    listed = _run_coroutine(nodes())
    if not isinstance(listed, (list, tuple)):
        raise TypeError(f"ComfyExtension.get_node_list() returned {type(listed).__name__}, not a list of nodes")
    return {v3_node_id(cls) if is_v3_class(cls) else getattr(cls, "__name__", repr(cls)): cls for cls in listed}
