"""The native node API: declare inputs and outputs once on a class, write `run`, get validation and a UI for free.

    class EmptyLatent(Node):
        "An empty latent batch to start sampling from."
        category = "latent"
        aliases = ("EmptyLatentImage",)
        inputs = [Int("width", 512, min=16, max=8192, step=8), Int("height", 512, min=16, max=8192, step=8),
                  Int("batch_size", 1, min=1, max=4096)]
        outputs = [Output(LATENT)]

        def run(self, width: int, height: int, batch_size: int) -> tuple:
            ...

Every node class, whatever its style, is compiled into a `NodeDef`: its `NodeSpec` plus the callables the
executor needs. Declarations are checked against `run`'s signature when the class is registered.
"""
from __future__ import annotations

import contextvars
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

from sdgraph.context import NodeContext
from sdgraph.paths import Dirs
from sdgraph.spec import InputSpec, NodeSpec, OutputSpec
from sdgraph.types import BOOLEAN, COMBO, FLOAT, INT, STRING


class NodeDeclarationError(Exception):
    """A node class whose declaration is inconsistent; its pack reports it and skips the node."""


@dataclass
class NodeOutput:
    """What a node returns when it has UI output (images to show, text) besides its socket values.

    `expand` is a graph of new nodes (API format, see `sdgraph.expansion.Subgraph`) that runs in the node's
    place: then `values` may hold links `[node_id, index]` into it, and the node's outputs are what they give.
    """

    values: tuple[Any, ...] = ()
    ui: dict[str, Any] | None = None
    expand: dict[str, Any] | None = None


class ExecutionBlocker:
    """An output value that stops every node it reaches: they do not run, and pass the blocker on.

    With a message, the first node it stops reports an `execution_error` with it (the prompt goes on); without
    one, the branch stops silently. Lazy inputs are usually the better tool; this one suits a node that must
    keep an output node (SaveImage, say) from running.
    """

    def __init__(self, message: str | None = None) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ExecutionBlocker({self.message!r})"


@dataclass(frozen=True)
class NodeDef:
    """A registered node: its spec and the callables the executor uses."""

    spec: NodeSpec
    invoke: Callable[[dict[str, Any], NodeContext], Any]
    fingerprint: Callable[[dict[str, Any], Dirs], Any] | None = None
    validate: Callable[[dict[str, Any], Dirs], Any] | None = None
    custom_validated: frozenset[str] = frozenset()
    pack: str = "builtin"
    cls: Any = field(default=None, compare=False)
    # which lazy inputs the node needs, given the inputs it has (None for the unevaluated ones)
    lazy_check: Callable[[dict[str, Any], NodeContext], Any] | None = None
    is_async: bool = False  # its function is `async def`: the run goes on with other nodes while it awaits
    resource: str | None = None  # declared: "accelerator", "io" or "cpu" (sdgraph.resources); None: inferred
    cobatch: bool = False  # its model calls may merge with other prompts' (a sampler; see sdgraph.cobatch)
    # the spec of an input the prompt gives that `spec.inputs` does not list, or None to ignore it: ComfyUI packs
    # whose INPUT_TYPES sections claim every name (rgthree's Any Switch, VHS's hidden section) take such inputs
    extra_input: Callable[[str], InputSpec | None] | None = None

    @property
    def class_type(self) -> str:
        return self.spec.class_type


# ---- input and output declarations -------------------------------------------------------------------------


def _section(optional: bool) -> str:
    return "optional" if optional else "required"


def Input(name: str, type: str, *, optional: bool = False, tooltip: str | None = None, **options: Any) -> InputSpec:
    """A socket input fed by a link (MODEL, LATENT, IMAGE, ...)."""
    return InputSpec(name=name, type=type, section=_section(optional), tooltip=tooltip, options=options)


def Int(name: str, default: int = 0, *, min: int | None = None, max: int | None = None, step: int | None = None,
        optional: bool = False, tooltip: str | None = None, **options: Any) -> InputSpec:
    return InputSpec(name=name, type=INT, section=_section(optional), default=default, min=min, max=max,
                     step=step, tooltip=tooltip, options=options)


def Float(name: str, default: float = 0.0, *, min: float | None = None, max: float | None = None,
          step: float = 0.01, optional: bool = False, tooltip: str | None = None, **options: Any) -> InputSpec:
    return InputSpec(name=name, type=FLOAT, section=_section(optional), default=default, min=min, max=max,
                     step=step, tooltip=tooltip, options=options)


def String(name: str, default: str | None = None, *, multiline: bool = False, optional: bool = False,
           tooltip: str | None = None, **options: Any) -> InputSpec:
    """A text widget; without a default it starts empty (and /object_info names no default, as ComfyUI's)."""
    return InputSpec(name=name, type=STRING, section=_section(optional), default="" if default is None else default,
                     implied_default=default is None, multiline=multiline, tooltip=tooltip, options=options)


def Boolean(name: str, default: bool = False, *, optional: bool = False, tooltip: str | None = None,
            **options: Any) -> InputSpec:
    return InputSpec(name=name, type=BOOLEAN, section=_section(optional), default=default, tooltip=tooltip,
                     options=options)


def Combo(name: str, choices: Sequence[Any] | Callable[[Dirs], list[Any]], default: Any = None, *,
          optional: bool = False, tooltip: str | None = None, **options: Any) -> InputSpec:
    """A choice from a list; pass a callable `f(dirs) -> list` when it comes from files (see `models_in`)."""
    static = None if callable(choices) else tuple(choices)
    implied = default is None
    if implied and static:
        default = static[0]  # what a client picks when the description names no default
    return InputSpec(name=name, type=COMBO, section=_section(optional), default=default, implied_default=implied,
                     choices=static, choices_from=choices if callable(choices) else None, tooltip=tooltip,
                     options=options)


@dataclass(frozen=True)
class ModelFiles:
    """Combo choices that are the model files of one folder; the engine keys a node's outputs on the chosen
    file's size and modification time too, so a file replaced under the same name is not taken for the old one."""

    folder: str

    def __call__(self, dirs: Dirs) -> list[str]:
        return dirs.list_models(self.folder)


def models_in(folder: str) -> ModelFiles:
    """Combo choices: the models in one folder (checkpoints, loras, vae, controlnet, ...)."""
    return ModelFiles(folder)


def Hidden(name: str, kind: str) -> InputSpec:
    """An input the engine fills in: PROMPT (the workflow), EXTRA_PNGINFO, UNIQUE_ID (the node id)."""
    return InputSpec(name=name, type=kind, section="hidden", hidden_kind=kind)


def Output(type: str, name: str | None = None, *, is_list: bool = False, tooltip: str | None = None) -> OutputSpec:
    return OutputSpec(type=type, name=name or type, is_list=is_list, tooltip=tooltip)


# ---- the native node base class ----------------------------------------------------------------------------


_CALL: contextvars.ContextVar[tuple[Any, NodeContext] | None] = contextvars.ContextVar("sdgraph_node_call",
                                                                                       default=None)


class _CallContext:
    """A node's `self.ctx`: the context of its call in progress in this thread, else the one it was last given.

    One object serves a node id in every run (as in the ecosystem), and the prompts of a group run at once
    (`sdgraph.cobatch`), so the context of a call cannot simply be an attribute of the object.
    """

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        call = _CALL.get()
        if call is not None and call[0] is obj:
            return call[1]
        try:
            return obj.__dict__["_ctx"]
        except KeyError:
            raise AttributeError(f"{type(obj).__name__}.ctx: the node is not being called by an executor") from None

    def __set__(self, obj: Any, ctx: NodeContext) -> None:
        obj.__dict__["_ctx"] = ctx


class Node:
    """Base class of native nodes. Subclasses declare class attributes and implement `run`."""

    class_type: ClassVar[str | None] = None
    display_name: ClassVar[str | None] = None
    description: ClassVar[str | None] = None
    category: ClassVar[str] = "sdgraph"
    aliases: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[Sequence[InputSpec]] = ()
    outputs: ClassVar[Sequence[OutputSpec]] = ()
    output_node: ClassVar[bool] = False
    not_idempotent: ClassVar[bool] = False
    input_is_list: ClassVar[bool] = False
    resource: ClassVar[str | None] = None  # "accelerator", "io" or "cpu"; None: from its inputs and outputs
    # a sampler: when several queued prompts run as a group, its model calls merge with theirs (sdgraph.cobatch)
    cobatch: ClassVar[bool] = False
    # inputs whose value validate_inputs checks in place of the declared choices or range (ComfyUI's rule for an
    # input named in VALIDATE_INPUTS), e.g. LoadImage's file names in subfolders
    self_checked: ClassVar[tuple[str, ...]] = ()

    ctx = _CallContext()

    def run(self, **inputs: Any) -> tuple[Any, ...] | NodeOutput:
        raise NotImplementedError

    def check_lazy_status(self, **inputs: Any) -> list[str]:
        """The names of lazy inputs (declared with `lazy=True`) the node needs, given those it has so far.

        Unevaluated lazy inputs arrive as None. Called before `run`, and again after the asked-for inputs are
        evaluated, until it asks for nothing new; a lazy input never asked for reaches `run` as None.
        """
        return []

    @classmethod
    def fingerprint(cls, dirs: Dirs, **literals: Any) -> Any:
        """A value standing for outside state the output depends on (a file's hash); None if there is none.

        Called before each run with the directory layout and the node's literal inputs.
        """
        return None

    @classmethod
    def validate_inputs(cls, dirs: Dirs, **literals: Any) -> str | None:
        """Extra checks on literal inputs: return a message to reject them, None to accept."""
        return None


def spec_of(cls: type[Node], pack: str = "builtin") -> NodeSpec:
    name = cls.class_type or cls.__name__
    return NodeSpec(
        class_type=name,
        display_name=cls.display_name or _words(name),
        description=inspect.cleandoc(cls.description or cls.__doc__ or ""),
        category=cls.category,
        inputs=tuple(cls.inputs),
        outputs=tuple(cls.outputs),
        output_node=cls.output_node,
        not_idempotent=cls.not_idempotent,
        input_is_list=cls.input_is_list,
        aliases=tuple(cls.aliases),
        python_module=NodeSpec.module_of(pack),
    )


def define(cls: type[Node], pack: str = "builtin") -> NodeDef:
    """Compile a native node class into a NodeDef, checking the declaration against `run`."""
    spec = spec_of(cls, pack)
    _check_declaration(cls, spec)

    def invoke(inputs: dict[str, Any], ctx: NodeContext) -> Any:
        node = ctx.instance(cls)
        node.__dict__["_ctx"] = ctx  # `ctx` outside the call: what an async run reads once its body runs elsewhere
        token = _CALL.set((node, ctx))
        try:
            return node.run(**inputs)
        finally:
            _CALL.reset(token)

    def lazy_check(inputs: dict[str, Any], ctx: NodeContext) -> Any:
        node = ctx.instance(cls)
        node.__dict__["_ctx"] = ctx
        token = _CALL.set((node, ctx))
        try:
            return node.check_lazy_status(**inputs)
        finally:
            _CALL.reset(token)

    overrides_lazy = cls.check_lazy_status is not Node.check_lazy_status
    overrides_fp = cls.fingerprint.__func__ is not Node.fingerprint.__func__  # type: ignore[attr-defined]
    overrides_val = cls.validate_inputs.__func__ is not Node.validate_inputs.__func__  # type: ignore[attr-defined]
    return NodeDef(
        spec=spec,
        invoke=invoke,
        fingerprint=(lambda literals, dirs: cls.fingerprint(dirs, **literals)) if overrides_fp else None,
        validate=(lambda literals, dirs: cls.validate_inputs(dirs, **literals)) if overrides_val else None,
        custom_validated=frozenset(cls.self_checked),
        pack=pack,
        cls=cls,
        lazy_check=lazy_check if overrides_lazy else None,
        is_async=inspect.iscoroutinefunction(cls.run),
        resource=cls.resource,
        cobatch=cls.cobatch,
    )


def _check_declaration(cls: type[Node], spec: NodeSpec) -> None:
    where = f"node {spec.class_type}"
    names = [spec.name for spec in spec.inputs]
    if len(set(names)) != len(names):
        raise NodeDeclarationError(f"{where}: an input name is declared twice: {names}")
    if not all(isinstance(out, OutputSpec) for out in spec.outputs):
        raise NodeDeclarationError(f"{where}: outputs must be Output(...) declarations")
    if cls.run is Node.run:
        raise NodeDeclarationError(f"{where}: no run() method")
    params = inspect.signature(cls.run).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = {n for n, p in params.items() if n != "self" and p.kind is not p.VAR_KEYWORD}
    for name in names:
        if not takes_any and name not in accepted:
            raise NodeDeclarationError(f"{where}: input {name!r} is declared but run() has no such parameter")
    for name, param in params.items():
        if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        if name not in names:
            raise NodeDeclarationError(f"{where}: run() takes {name!r}, which is not a declared input")
        declared = spec.inputs_by_name[name]
        if declared.section == "optional" and param.default is inspect.Parameter.empty:
            raise NodeDeclarationError(f"{where}: optional input {name!r} needs a default in run()")


def _words(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (name[i - 1].islower() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append(" ")
        out.append(ch)
    return "".join(out)
