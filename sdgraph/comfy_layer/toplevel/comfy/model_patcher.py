"""`comfy.model_patcher` for plugins: ModelPatcher is sdgraph's MODEL class.

sdgraph's MODEL (`DiffusionModel`) carries ComfyUI ModelPatcher's patching surface (`clone`, `model_options`,
the `set_model_*` setters, object and weight patches: see sdgraph.nodes.sd.model_patcher), so
`isinstance(model, comfy.model_patcher.ModelPatcher)` holds for every MODEL a node receives. Constructing one
from a bare torch module (`ModelPatcher(model, load_device, offload_device)`) is not supported: MODEL values
come from loaders, whose modules sdgraph's model manager owns.
"""
from __future__ import annotations

from typing import Any

from sdgraph.nodes.sd.model_objects import DiffusionModel
from sdgraph.nodes.sd.model_patcher import copy_options
from sdgraph.nodes.sd.model_patcher import set_model_options_patch_replace  # noqa: F401 - ComfyUI's name


class _PatcherClass(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, DiffusionModel) or type.__instancecheck__(cls, obj)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, DiffusionModel) or type.__subclasscheck__(cls, sub)


class ModelPatcher(metaclass=_PatcherClass):
    """isinstance / issubclass stand for sdgraph's MODEL class; instances come from loaders only."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("comfy.model_patcher.ModelPatcher(module, ...): sdgraph's MODEL values come "
                                  "from its loaders (comfy.sd.load_checkpoint_guess_config, "
                                  "load_diffusion_model); wrapping a bare torch module is not supported")


def set_model_options_post_cfg_function(model_options: dict[str, Any], post_cfg_function: Any,
                                        disable_cfg1_optimization: bool = False) -> dict[str, Any]:
    """model_options (changed in place and returned) with one more post-CFG function."""
    model_options["sampler_post_cfg_function"] = model_options.get("sampler_post_cfg_function", []) + \
        [post_cfg_function]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def set_model_options_pre_cfg_function(model_options: dict[str, Any], pre_cfg_function: Any,
                                       disable_cfg1_optimization: bool = False) -> dict[str, Any]:
    model_options["sampler_pre_cfg_function"] = model_options.get("sampler_pre_cfg_function", []) + \
        [pre_cfg_function]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def create_model_options_clone(orig_model_options: dict[str, Any]) -> dict[str, Any]:
    """A copy whose nested dicts and lists can change without touching the original."""
    return copy_options(orig_model_options)


__all__ = ["ModelPatcher", "create_model_options_clone", "set_model_options_patch_replace",
           "set_model_options_post_cfg_function", "set_model_options_pre_cfg_function"]
