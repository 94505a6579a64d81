"""MODEL's patching surface, shaped like ComfyUI's ModelPatcher: what model-patch nodes and plugins write against.

A MODEL carries `model_options`, a dict laid out as ComfyUI's:

- "transformer_options": {"patches": {name: [patch, ...]}, "patches_replace": {name: {key: patch}}, ...}
  where name is "attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch", "input_block_patch",
  "input_block_patch_after_skip", "output_block_patch", "middle_patch" (lists) or "attn1" / "attn2" (replacements
  keyed by (block_name, number) or (block_name, number, transformer_index));
- "sampler_cfg_function", "sampler_pre_cfg_function" (list), "sampler_post_cfg_function" (list),
  "model_function_wrapper", "denoise_mask_function", "disable_cfg1_optimization".

Setting a patch never changes the MODEL it was cloned from: `clone()` copies every nested dict and list (the
patches themselves, functions and tensors, are shared, as ComfyUI shares them). The sampler and the UNet read
these options at sampling time; this module only records them.

Weight patches (`WeightMethods.add_patches` and friends) address weights by ComfyUI's key names and are
applied by the model manager when the module is next used.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from sdgraph.nodes.sd.comfy_keys import filtered
from sdgraph.nodes.sd.weight_patches import KeyPatchSet, add_key_patches


def default_model_options() -> dict[str, Any]:
    return {"transformer_options": {}}


def copy_options(options: dict[str, Any]) -> dict[str, Any]:
    """A copy of nested dicts and lists; every other value (functions, tensors, objects) is shared."""
    return {key: _copy_containers(value) for key, value in options.items()}


def _copy_containers(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy_containers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_containers(item) for item in value]
    return value


def set_model_options_patch_replace(model_options: dict[str, Any], patch: Any, name: str, block_name: str,
                                    number: int, transformer_index: int | None = None) -> dict[str, Any]:
    """`model_options` with one more attention replacement (ComfyUI's module-level function of this name): the
    dict is given a new "transformer_options" whose "patches_replace" and its `name` table are fresh copies, so
    the options it was copied from (pass a shallow copy) never see the patch. What a post-cfg function uses to
    run the model once more with a different attention."""
    transformer = dict(model_options.get("transformer_options", {}))
    replace = dict(transformer.get("patches_replace", {}))
    table = dict(replace.get(name, {}))
    table[(block_name, number) if transformer_index is None else (block_name, number, transformer_index)] = patch
    replace[name] = table
    transformer["patches_replace"] = replace
    model_options["transformer_options"] = transformer
    return model_options


class PatcherMethods:
    """ComfyUI ModelPatcher's option setters, mixed into DiffusionModel (which holds `model_options` and
    `object_patches`). Each records into this model only: clone first, as nodes do."""

    model_options: dict[str, Any]
    object_patches: dict[str, Any]

    @property
    def model(self) -> Any:
        """ComfyUI's `patcher.model` (its inner BaseModel): sdgraph's MODEL plays both parts, so it is itself
        (packs write `comfy.lora.model_lora_keys_unet(model.model)`, `isinstance(model.model, SDXL)`)."""
        return self

    # ---- sampler-level hooks --------------------------------------------------------------------------------

    def set_model_sampler_cfg_function(self, function: Callable[..., Any],
                                       disable_cfg1_optimization: bool = False) -> None:
        self.model_options["sampler_cfg_function"] = function
        self._maybe_disable_cfg1(disable_cfg1_optimization)

    def set_model_sampler_post_cfg_function(self, function: Callable[..., Any],
                                            disable_cfg1_optimization: bool = False) -> None:
        self.model_options.setdefault("sampler_post_cfg_function", []).append(function)
        self._maybe_disable_cfg1(disable_cfg1_optimization)

    def set_model_sampler_pre_cfg_function(self, function: Callable[..., Any],
                                           disable_cfg1_optimization: bool = False) -> None:
        self.model_options.setdefault("sampler_pre_cfg_function", []).append(function)
        self._maybe_disable_cfg1(disable_cfg1_optimization)

    def set_model_unet_function_wrapper(self, function: Callable[..., Any]) -> None:
        self.model_options["model_function_wrapper"] = function

    def set_model_denoise_mask_function(self, function: Callable[..., Any]) -> None:
        self.model_options["denoise_mask_function"] = function

    def _maybe_disable_cfg1(self, disable: bool) -> None:
        if disable:
            self.model_options["disable_cfg1_optimization"] = True

    # ---- UNet-level hooks (transformer_options) -------------------------------------------------------------

    def set_model_patch(self, patch: Any, name: str) -> None:
        patches = self.model_options["transformer_options"].setdefault("patches", {})
        patches.setdefault(name, []).append(patch)

    def set_model_patch_replace(self, patch: Any, name: str, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        replace = self.model_options["transformer_options"].setdefault("patches_replace", {})
        key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
        replace.setdefault(name, {})[key] = patch

    def set_model_attn1_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn2_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn2_patch")

    def set_model_attn1_replace(self, patch: Any, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn2_replace(self, patch: Any, block_name: str, number: int,
                                transformer_index: int | None = None) -> None:
        self.set_model_patch_replace(patch, "attn2", block_name, number, transformer_index)

    def set_model_attn1_output_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn1_output_patch")

    def set_model_attn2_output_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "attn2_output_patch")

    def set_model_input_block_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "input_block_patch")

    def set_model_input_block_patch_after_skip(self, patch: Any) -> None:
        self.set_model_patch(patch, "input_block_patch_after_skip")

    def set_model_output_block_patch(self, patch: Any) -> None:
        self.set_model_patch(patch, "output_block_patch")

    # ---- object patches -------------------------------------------------------------------------------------

    def add_object_patch(self, name: str, obj: Any) -> None:
        """Replace a named object of the model (e.g. "model_sampling") for this MODEL and its clones."""
        self.object_patches[name] = obj

    def get_model_object(self, name: str) -> Any:
        """The object patch called `name`, else the model's own attribute of that name."""
        if name in self.object_patches:
            return self.object_patches[name]
        return getattr(self, name)


class WeightMethods:
    """ComfyUI ModelPatcher's weight-patch calls (`add_patches`, `get_key_patches`, `model_state_dict`) over
    ComfyUI's key names (see `nodes.sd.comfy_keys`), mixed into DiffusionModel and ClipModel.

    A class provides `_weight_targets()` ({key: (module index, parameter name)}), `_weight_slots()` and
    `_weight_patches(index)` / `_append_weight_patch(index, patch)`. `add_patches` changes this value in place,
    as ComfyUI's does: clone first.
    """

    def _weight_targets(self) -> dict[str, tuple[int, str]]:
        raise NotImplementedError

    def _weight_slots(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _weight_patches(self, index: int) -> tuple[Any, ...]:
        raise NotImplementedError

    def _append_weight_patch(self, index: int, patch: Any) -> None:
        raise NotImplementedError

    def add_patches(self, patches: dict[Any, Any], strength_patch: float = 1.0,
                    strength_model: float = 1.0) -> list[Any]:
        """Record weight patches (ComfyUI's semantics, `nodes.sd.weight_patches`); the keys that exist here."""
        targets = self._weight_targets()
        taken: list[Any] = []
        for index in range(len(self._weight_slots())):
            names = {key: name for key, (i, name) in targets.items() if i == index}
            patch, keys = add_key_patches(names, patches, strength_patch, strength_model)
            if patch is not None:
                self._append_weight_patch(index, patch)
                taken += keys
        return taken

    def model_state_dict(self, filter_prefix: str | None = None) -> dict[str, torch.Tensor]:
        """Every weight under its ComfyUI key, unpatched (the tensors are the model's own: do not modify)."""
        originals = [slot.manager.original_weights(slot) for slot in self._weight_slots()]
        return {key: originals[i][name] for key, (i, name) in filtered(self._weight_targets(), filter_prefix).items()}

    def patched_state_dict(self, filter_prefix: str | None = None) -> dict[str, torch.Tensor]:
        """Every weight under its ComfyUI key with this value's patches applied (CPU float copies)."""
        modules = [slot.manager.acquire(slot, self._weight_patches(i)) for i, slot in enumerate(self._weight_slots())]
        params = [dict(m.named_parameters()) for m in modules]
        return {key: params[i][name].detach().to("cpu", copy=True)
                for key, (i, name) in filtered(self._weight_targets(), filter_prefix).items()}

    def get_key_patches(self, filter_prefix: str | None = None) -> dict[str, list[Any]]:
        """{key: [(weight, convert), *patch entries]}: each weight with the patches this value carries for it,
        the form `add_patches` takes to merge this model into another."""
        weights = self.model_state_dict(filter_prefix)
        targets = self._weight_targets()
        out: dict[str, list[Any]] = {}
        for key, weight in weights.items():
            index, name = targets[key]
            out[key] = [(weight, _unchanged), *_entries_for(self._weight_patches(index), name, weight)]
        return out


def _unchanged(weight: torch.Tensor, **_: Any) -> torch.Tensor:
    return weight


def _entries_for(patches: tuple[Any, ...], name: str, weight: torch.Tensor) -> list[Any]:
    """The ComfyUI patch entries equal to sdgraph's patches of one parameter (a LoRA becomes its diff)."""
    entries: list[Any] = []
    for patch in patches:
        if isinstance(patch, KeyPatchSet):
            entries += list(patch.entries.get(name, ()))
        elif name in patch.targets() and patch.strength != 0:
            entries.append((1.0, ("diff", (patch.delta(name, weight),)), 1.0, None, None))
    return entries
