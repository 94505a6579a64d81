"""The V3 socket types: `io.Int`, `io.Image`, `io.Custom("X")` ..., each with its `.Input` and `.Output` declarations.

A socket type is a class holding its wire name (`io_type`) and nested `Input` / `Output` classes; declaring
`io.Int.Input("steps", default=20, min=1)` builds one input. Every declaration describes itself as ComfyUI's
`/object_info` does (`as_dict`, `get_io_type`): option keys are left out when unset (None), kept when set,
even to False.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Callable, TypeVar


def pruned(entries: dict[str, Any]) -> dict[str, Any]:
    """The entries whose value is set (not None)."""
    return {key: value for key, value in entries.items() if value is not None}


def enum_value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


class FolderType(str, Enum):
    input = "input"
    output = "output"
    temp = "temp"


class UploadType(str, Enum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class RemoteOptions:
    """A combo whose choices the editor fetches from a route."""

    def __init__(self, route: str, refresh_button: bool, control_after_refresh: str = "first",
                 timeout: int | None = None, max_retries: int | None = None, refresh: int | None = None) -> None:
        self.route, self.refresh_button, self.control_after_refresh = route, refresh_button, control_after_refresh
        self.timeout, self.max_retries, self.refresh = timeout, max_retries, refresh

    def as_dict(self) -> dict[str, Any]:
        return pruned({"route": self.route, "refresh_button": self.refresh_button,
                       "control_after_refresh": self.control_after_refresh, "timeout": self.timeout,
                       "max_retries": self.max_retries, "refresh": self.refresh})


class IOType(str):
    """A wire name; `*` matches any, and "A,B" matches a name it shares a member with (for `!=` checks packs do)."""

    def __ne__(self, other: object) -> bool:
        if not isinstance(other, str):
            return True
        if self == "*" or other == "*":
            return False
        mine, theirs = frozenset(self.split(",")), frozenset(other.split(","))
        return not (mine <= theirs or theirs <= mine)

    __hash__ = str.__hash__


# ---- declarations ------------------------------------------------------------------------------------------


class _Declaration:
    Parent: Any = None  # the socket type class this Input/Output belongs to (set by @comfytype)

    @property
    def io_type(self) -> Any:
        return self.Parent.io_type

    @property
    def Type(self) -> Any:  # noqa: N802 - ComfyUI's name
        return self.Parent.Type


class Input(_Declaration):
    """One input of a node: its id (the keyword `execute` receives), and how the editor shows it."""

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None,
                 advanced: bool | None = None) -> None:
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}
        self.raw_link = raw_link
        self.advanced = advanced

    def as_dict(self) -> dict[str, Any]:
        return pruned({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                       "lazy": self.lazy, "rawLink": self.raw_link, "advanced": self.advanced}) \
            | pruned(self.extra_dict)

    def get_io_type(self) -> Any:
        return IOType(self.io_type)

    def get_all(self) -> list[Input]:
        return [self]

    def validate(self) -> None:
        return None


class WidgetInput(Input):
    """An input that can be a value typed into the node (a widget) as well as a socket."""

    def __init__(self, id: str, display_name: str | None = None, optional: bool = False, tooltip: str | None = None,
                 lazy: bool | None = None, default: Any = None, socketless: bool | None = None,
                 widget_type: str | None = None, force_input: bool | None = None,
                 extra_dict: dict[str, Any] | None = None, raw_link: bool | None = None,
                 advanced: bool | None = None) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link, advanced)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | pruned({"default": self.default, "socketless": self.socketless,
                                           "widgetType": self.widget_type, "forceInput": self.force_input})

    def get_io_type(self) -> Any:
        return self.widget_type if self.widget_type is not None else super().get_io_type()


class Output(_Declaration):
    def __init__(self, id: str | None = None, display_name: str | None = None, tooltip: str | None = None,
                 is_output_list: bool = False) -> None:
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def as_dict(self) -> dict[str, Any]:
        return pruned({"display_name": self.display_name, "tooltip": self.tooltip,
                       "is_output_list": self.is_output_list})

    def get_io_type(self) -> Any:
        return self.io_type

    def validate(self) -> None:
        return None


# ---- socket types ------------------------------------------------------------------------------------------


class _ComfyType:
    Type: Any = Any
    io_type: Any = None


class ComfyTypeI(_ComfyType):
    """A socket type with only an input declaration."""

    class Input(Input):
        pass


class ComfyTypeIO(ComfyTypeI):
    """A socket type with input and output declarations."""

    class Output(Output):
        pass


T = TypeVar("T", bound=type)


def comfytype(io_type: str, **_: Any) -> Callable[[T], T]:
    """Bind a wire name to a socket type class; its Input/Output become its own subclasses that know it."""

    def bind(cls: T) -> T:
        if not issubclass(cls, _ComfyType):
            cls = type(cls.__name__, (cls, ComfyTypeIO), {k: v for k, v in vars(cls).items()
                                                          if k not in ("__dict__", "__weakref__")})
        cls.io_type = IOType(io_type)
        for role in ("Input", "Output"):
            declared = getattr(cls, role, None)
            if isinstance(declared, type):  # a subclass per socket type, so a shared base never learns a Parent
                setattr(cls, role, type(declared.__name__, (declared,), {"Parent": cls,
                                                                         "__qualname__": declared.__qualname__,
                                                                         "__module__": declared.__module__}))
        return cls

    return bind


def Custom(io_type: str) -> type[ComfyTypeIO]:  # noqa: N802 - ComfyUI's name
    """A socket type for a wire name of the pack's own."""

    @comfytype(io_type=io_type)
    class CustomType(ComfyTypeIO):
        pass

    return CustomType


@comfytype(io_type="BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: bool | None = None,
                     label_on: str | None = None, label_off: str | None = None, socketless: bool | None = None,
                     force_input: bool | None = None, extra_dict: dict | None = None, raw_link: bool | None = None,
                     advanced: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | pruned({"label_on": self.label_on, "label_off": self.label_off})


@comfytype(io_type="INT")
class Int(ComfyTypeIO):
    Type = int

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: int | None = None,
                     min: int | None = None, max: int | None = None, step: int | None = None,
                     control_after_generate: bool | None = None, display_mode: NumberDisplay | None = None,
                     socketless: bool | None = None, force_input: bool | None = None, extra_dict: dict | None = None,
                     raw_link: bool | None = None, advanced: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | pruned({"min": self.min, "max": self.max, "step": self.step,
                                               "control_after_generate": self.control_after_generate,
                                               "display": enum_value(self.display_mode)})


@comfytype(io_type="FLOAT")
class Float(ComfyTypeIO):
    Type = float

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: float | None = None,
                     min: float | None = None, max: float | None = None, step: float | None = None,
                     round: float | None = None, display_mode: NumberDisplay | None = None,
                     socketless: bool | None = None, force_input: bool | None = None, extra_dict: dict | None = None,
                     raw_link: bool | None = None, advanced: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | pruned({"min": self.min, "max": self.max, "step": self.step,
                                               "round": self.round, "display": enum_value(self.display_mode)})


@comfytype(io_type="STRING")
class String(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, multiline: bool = False,
                     placeholder: str | None = None, default: str | None = None,
                     dynamic_prompts: bool | None = None, socketless: bool | None = None,
                     force_input: bool | None = None, extra_dict: dict | None = None, raw_link: bool | None = None,
                     advanced: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input,
                             extra_dict, raw_link, advanced)
            self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | pruned({"multiline": self.multiline, "placeholder": self.placeholder,
                                               "dynamicPrompts": self.dynamic_prompts})


@comfytype(io_type="COMBO")
class Combo(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, options: Any = None, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: Any = None,
                     control_after_generate: bool | None = None, upload: UploadType | None = None,
                     image_folder: FolderType | None = None, remote: RemoteOptions | None = None,
                     socketless: bool | None = None, extra_dict: dict | None = None, raw_link: bool | None = None,
                     advanced: bool | None = None) -> None:
            if isinstance(options, type) and issubclass(options, Enum):
                options = [member.value for member in options]
            super().__init__(id, display_name, optional, tooltip, lazy, enum_value(default), socketless,
                             extra_dict=extra_dict, raw_link=raw_link, advanced=advanced)
            self.multiselect = False
            self.options = options
            self.control_after_generate = control_after_generate
            self.upload, self.image_folder, self.remote = upload, image_folder, remote

        def as_dict(self) -> dict[str, Any]:
            upload = {self.upload.value: True} if self.upload is not None else {}
            return super().as_dict() | pruned({
                "multiselect": self.multiselect, "options": self.options,
                "control_after_generate": self.control_after_generate, **upload,
                "image_folder": enum_value(self.image_folder),
                "remote": self.remote.as_dict() if self.remote is not None else None})

    class Output(Output):
        def __init__(self, id: str | None = None, display_name: str | None = None, options: list | None = None,
                     tooltip: str | None = None, is_output_list: bool = False) -> None:
            super().__init__(id, display_name, tooltip, is_output_list)
            self.options = options if options is not None else []

        @property
        def io_type(self) -> Any:  # a combo output's wire name is its list of choices
            return self.options


@comfytype(io_type="COMBO")
class MultiCombo(ComfyTypeI):
    """A combo that may select several choices."""

    Type = list

    class Input(Combo.Input):
        def __init__(self, id: str, options: list, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: list | None = None,
                     placeholder: str | None = None, chip: bool | None = None,
                     control_after_generate: bool | None = None, socketless: bool | None = None) -> None:
            super().__init__(id, options, display_name, optional, tooltip, lazy, default, control_after_generate,
                             socketless=socketless)
            self.multiselect = True
            self.placeholder, self.chip = placeholder, chip

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | pruned({"multi_select": self.multiselect, "placeholder": self.placeholder,
                                               "chip": self.chip})


@comfytype(io_type="WEBCAM")
class Webcam(ComfyTypeIO):
    Type = str

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, lazy: bool | None = None, default: str | None = None,
                     socketless: bool | None = None) -> None:
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)


@comfytype(io_type="BOUNDING_BOX")
class BoundingBox(ComfyTypeIO):
    """A rectangle widget ({x, y, width, height})."""

    Type = dict

    class Input(WidgetInput):
        def __init__(self, id: str, display_name: str | None = None, optional: bool = False,
                     tooltip: str | None = None, socketless: bool | None = True, default: dict | None = None,
                     component: str | None = None, force_input: bool | None = None) -> None:
            default = default if default is not None else {"x": 0, "y": 0, "width": 512, "height": 512}
            super().__init__(id, display_name, optional, tooltip, None, default, socketless,
                             force_input=force_input)
            self.component = component

        def as_dict(self) -> dict[str, Any]:
            return super().as_dict() | pruned({"component": self.component})


# Plain socket types: (class name, wire name). Each gets the default Input and Output declarations.
_PLAIN = (
    ("Image", "IMAGE"), ("Mask", "MASK"), ("Latent", "LATENT"), ("Conditioning", "CONDITIONING"),
    ("Sampler", "SAMPLER"), ("Sigmas", "SIGMAS"), ("Noise", "NOISE"), ("Guider", "GUIDER"), ("Clip", "CLIP"),
    ("ControlNet", "CONTROL_NET"), ("Vae", "VAE"), ("Model", "MODEL"), ("ClipVision", "CLIP_VISION"),
    ("ClipVisionOutput", "CLIP_VISION_OUTPUT"), ("StyleModel", "STYLE_MODEL"), ("Gligen", "GLIGEN"),
    ("UpscaleModel", "UPSCALE_MODEL"), ("LatentUpscaleModel", "LATENT_UPSCALE_MODEL"), ("Audio", "AUDIO"),
    ("Video", "VIDEO"), ("SVG", "SVG"), ("LoraModel", "LORA_MODEL"), ("LossMap", "LOSS_MAP"), ("Voxel", "VOXEL"),
    ("Mesh", "MESH"), ("Hooks", "HOOKS"), ("HookKeyframes", "HOOK_KEYFRAMES"), ("TimestepsRange", "TIMESTEPS_RANGE"),
    ("LatentOperation", "LATENT_OPERATION"), ("FlowControl", "FLOW_CONTROL"), ("Accumulation", "ACCUMULATION"),
    ("Load3DCamera", "LOAD3D_CAMERA"), ("Load3D", "LOAD_3D"), ("Load3DAnimation", "LOAD_3D_ANIMATION"),
    ("Photomaker", "PHOTOMAKER"), ("Point", "POINT"), ("FaceAnalysis", "FACE_ANALYSIS"), ("BBOX", "BBOX"),
    ("SEGS", "SEGS"), ("AnyType", "*"), ("MODEL_PATCH", "MODEL_PATCH"), ("AudioEncoder", "AUDIO_ENCODER"),
    ("AudioEncoderOutput", "AUDIO_ENCODER_OUTPUT"), ("WanCameraEmbedding", "WAN_CAMERA_EMBEDDING"),
    ("Tracks", "TRACKS"),
)

PLAIN_TYPES: dict[str, type[ComfyTypeIO]] = {
    name: comfytype(io_type=wire)(type(name, (ComfyTypeIO,), {"__module__": __name__, "__qualname__": name}))
    for name, wire in _PLAIN
}
globals().update(PLAIN_TYPES)

__all__ = ["FolderType", "UploadType", "NumberDisplay", "RemoteOptions", "IOType", "Input", "WidgetInput", "Output",
           "ComfyTypeI", "ComfyTypeIO", "comfytype", "Custom", "Boolean", "Int", "Float", "String", "Combo",
           "MultiCombo", "Webcam", "BoundingBox", *PLAIN_TYPES]
