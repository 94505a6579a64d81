"""`comfy.patcher_extension` for plugins: the names of ComfyUI's ModelPatcher callbacks and wrappers.

The CallbacksMP / WrappersMP names and the nested-dict helpers are provided. sdgraph's sampler does not call
ComfyUI's patcher callbacks or wrappers, so registering one (`add_callback*`, `add_wrapper*`) raises
NotImplementedError rather than record something that would silently never run; the getters find none.
"""
from __future__ import annotations

from typing import Any, Callable

from sdgraph.comfy_layer import unsupported

_FEATURE = "ComfyUI's ModelPatcher callbacks and wrappers (sdgraph's sampler does not call them)"


class CallbacksMP:
    ON_CLONE = "on_clone"
    ON_LOAD = "on_load_after"
    ON_DETACH = "on_detach_after"
    ON_CLEANUP = "on_cleanup"
    ON_PRE_RUN = "on_pre_run"
    ON_PREPARE_STATE = "on_prepare_state"
    ON_APPLY_HOOKS = "on_apply_hooks"
    ON_REGISTER_ALL_HOOK_PATCHES = "on_register_all_hook_patches"
    ON_INJECT_MODEL = "on_inject_model"
    ON_EJECT_MODEL = "on_eject_model"

    @classmethod
    def init_callbacks(cls) -> dict[str, dict[str, list[Callable]]]:
        return {}


class WrappersMP:
    OUTER_SAMPLE = "outer_sample"
    PREPARE_SAMPLING = "prepare_sampling"
    SAMPLER_SAMPLE = "sampler_sample"
    PREDICT_NOISE = "predict_noise"
    CALC_COND_BATCH = "calc_cond_batch"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"

    @classmethod
    def init_wrappers(cls) -> dict[str, dict[str, list[Callable]]]:
        return {}


def _registered(kind: str, name: str, options: dict[str, Any], is_model_options: bool, key: Any = ...
                ) -> list[Callable]:
    if is_model_options:
        options = options.get("transformer_options", {})
    table = options.get(kind, {}).get(name, {})
    if key is ...:
        return [f for functions in table.values() for f in functions]
    return list(table.get(key, []))


def get_all_callbacks(call_type: str, transformer_options: dict, is_model_options: bool = False) -> list[Callable]:
    return _registered("callbacks", call_type, transformer_options, is_model_options)


def get_callbacks_with_key(call_type: str, key: str, transformer_options: dict, is_model_options: bool = False
                           ) -> list[Callable]:
    return _registered("callbacks", call_type, transformer_options, is_model_options, key)


def get_all_wrappers(wrapper_type: str, transformer_options: dict, is_model_options: bool = False
                     ) -> list[Callable]:
    return _registered("wrappers", wrapper_type, transformer_options, is_model_options)


def get_wrappers_with_key(wrapper_type: str, key: str, transformer_options: dict, is_model_options: bool = False
                          ) -> list[Callable]:
    return _registered("wrappers", wrapper_type, transformer_options, is_model_options, key)


def copy_nested_dicts(input_dict: dict) -> dict:
    """A copy in which nested dicts are copied recursively and lists shallowly."""
    return {k: copy_nested_dicts(v) if isinstance(v, dict) else v.copy() if isinstance(v, list) else v
            for k, v in input_dict.items()}


def merge_nested_dicts(dict1: dict, dict2: dict, copy_dict1: bool = True) -> dict:
    """dict1 with dict2 merged in: dicts merged recursively, lists concatenated, other values replaced."""
    merged = copy_nested_dicts(dict1) if copy_dict1 else dict1
    for key, value in dict2.items():
        if isinstance(value, dict):
            merged[key] = merge_nested_dicts(value, merged.get(key, {}))
        elif isinstance(value, list):
            merged.setdefault(key, []).extend(value)
        else:
            merged[key] = value
    return merged


unsupported.define(globals(), _FEATURE, ("add_callback", "add_callback_with_key", "add_wrapper",
                                         "add_wrapper_with_key", "WrapperExecutor", "PatcherInjection"))
