"""ComfyUI's guidance pipeline, for a MODEL whose options set sampler-level hooks (see `nodes.sd.model_patcher`).

One denoiser call goes as ComfyUI's `sampling_function` goes:

1. conds = [positive, negative]; the negative is None at cfg 1 unless "disable_cfg1_optimization" is set (or a
   CFG++ sampler needs it);
2. `calc_cond_batch` evaluates each cond on x and returns its x0 estimate (zeros for None); every UNet call goes
   through "model_function_wrapper"(apply_model, {"input", "timestep", "c", "cond_or_uncond"}) when one is set;
3. each "sampler_pre_cfg_function" maps {"conds", "conds_out", "cond_scale", "timestep", "input", "sigma",
   "model", "model_options"} to new conds_out;
4. `cfg_function`: "sampler_cfg_function" gets {"cond": x - cond_x0, "uncond": x - uncond_x0, "cond_scale",
   "timestep", "input", "sigma", "cond_denoised", "uncond_denoised", "model", "model_options", "input_cond",
   "input_uncond"} and returns x - result (a noise-like difference, as the cond/uncond it is given); without one,
   uncond_x0 + cond_scale (cond_x0 - uncond_x0);
5. each "sampler_post_cfg_function" maps {"denoised", "cond", "uncond", "cond_scale", "model", "uncond_denoised",
   "cond_denoised", "sigma", "model_options", "input"} to a new denoised estimate.

Tensors are in the model's space; "sigma" and "timestep" are the noise level per batch item (float32 [B] on the
device), "cond"/"uncond"/"conds" the lists of prepared entries, "model" the `SDDenoiser` (its `model_sampling`,
`apply_model`, and `prepare(conditioning, prompt_type)` for more entries). `calc_cond_batch(model, conds, x,
timestep, model_options)` evaluates the model on any list of conds with any options: what guidance that runs the
model again (perturbed attention, self-attention guidance) calls from its post-cfg function.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from sdgraph.nodes.sd.gligen_cond import with_cond_patches

if TYPE_CHECKING:
    from sdgraph.nodes.sd.denoiser import Entry, SDDenoiser

Tensor = torch.Tensor
Conds = Sequence["Sequence[Entry] | None"]

SAMPLER_HOOKS = ("sampler_cfg_function", "sampler_pre_cfg_function", "sampler_post_cfg_function",
                 "model_function_wrapper")


def sampler_hooks_set(model_options: dict[str, Any]) -> bool:
    """Whether the options set a hook that the pipeline of this module has to run."""
    return any(model_options.get(name) for name in SAMPLER_HOOKS)


def levels(x: Tensor, sigma: float) -> Tensor:
    """The noise level of each batch item, as the hooks are given it."""
    return torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)


def step_levels(model: Any, x: Tensor, sigma: float) -> Tensor:
    """`levels`, noted on the denoiser (`SDDenoiser.remember_level`) so that the pipeline's calls need not read
    the sigma back from the device."""
    timestep = levels(x, sigma)
    remember = getattr(model, "remember_level", None)
    return timestep if remember is None else remember(timestep, float(sigma))


def _sigma_of(model: Any, timestep: Tensor) -> float:
    level_of = getattr(model, "level_of", None)
    return float(timestep.reshape(-1)[0]) if level_of is None else level_of(timestep)


def calc_cond_batch(model: "SDDenoiser", conds: Conds, x: Tensor, timestep: Tensor,
                    model_options: dict[str, Any]) -> list[Tensor]:
    """The x0 estimate of each cond on x at noise levels `timestep` ([B]): the weighted average of its entries'
    estimates (ComfyUI's weights, see `cond_areas`; entries outside their step window sit out), zeros where none
    weighs (and for a None cond), as ComfyUI's."""
    outs = [torch.zeros_like(x) for _ in conds]
    counts = [torch.full_like(x, 1e-37) for _ in conds]
    sigma = _sigma_of(model, timestep)
    wrapper = model_options.get("model_function_wrapper")
    for call in model.cond_calls(conds, sigma):
        input_x, c = model.call_inputs(call, x, sigma)
        chunks = len(call.indices)
        c["transformer_options"] = {**model_options.get("transformer_options", {}),
                                    "cond_or_uncond": list(call.indices), "uuids": [e.uuid for e in call.entries],
                                    "sigmas": timestep}
        c["transformer_options"] = with_cond_patches(c["transformer_options"], model.call_patches(call, input_x.shape))
        stacked_levels = torch.cat([timestep] * chunks)
        if hasattr(model, "remember_level"):
            model.remember_level(stacked_levels, sigma)
        if wrapper is None:
            output = model.apply_model(input_x, stacked_levels, **c)
        else:
            output = wrapper(model.apply_model, {"input": input_x, "timestep": stacked_levels, "c": c,
                                                 "cond_or_uncond": list(call.indices)})
        y0, y1, x0, x1 = call.box
        for index, entry, chunk in zip(call.indices, call.entries, output.chunk(chunks)):
            weight = model.entry_weight(entry, chunk.shape[0])
            outs[index][:, :, y0:y1, x0:x1] += chunk * weight
            counts[index][:, :, y0:y1, x0:x1] += weight
    return [out / count for out, count in zip(outs, counts)]


def pre_cfg(model: "SDDenoiser", conds: Conds, conds_out: list[Tensor], cond_scale: float, x: Tensor,
            timestep: Tensor, model_options: dict[str, Any]) -> list[Tensor]:
    for fn in model_options.get("sampler_pre_cfg_function", []):
        conds_out = fn({"conds": conds, "conds_out": conds_out, "cond_scale": cond_scale, "timestep": timestep,
                        "input": x, "sigma": timestep, "model": model, "model_options": model_options})
    return conds_out


def post_cfg(model: "SDDenoiser", denoised: Tensor, cond: Any, uncond: Any, cond_pred: Tensor, uncond_pred: Tensor,
             cond_scale: float, x: Tensor, timestep: Tensor, model_options: dict[str, Any],
             **extra: Any) -> Tensor:
    """The post-cfg functions in order; `extra` adds arguments a guider hands over besides ComfyUI's own."""
    for fn in model_options.get("sampler_post_cfg_function", []):
        denoised = fn({"denoised": denoised, "cond": cond, "uncond": uncond, "cond_scale": cond_scale,
                       "model": model, "uncond_denoised": uncond_pred, "cond_denoised": cond_pred,
                       "sigma": timestep, "model_options": model_options, "input": x, **extra})
    return denoised


def cfg_function(model: "SDDenoiser", cond_pred: Tensor, uncond_pred: Tensor, cond_scale: float, x: Tensor,
                 timestep: Tensor, model_options: dict[str, Any], cond: Any = None, uncond: Any = None) -> Tensor:
    """Guidance between two x0 estimates (the model's cfg function if it has one), then the post-cfg functions."""
    custom = model_options.get("sampler_cfg_function")
    if custom is not None:
        result = x - custom({"cond": x - cond_pred, "uncond": x - uncond_pred, "cond_scale": cond_scale,
                             "timestep": timestep, "input": x, "sigma": timestep, "cond_denoised": cond_pred,
                             "uncond_denoised": uncond_pred, "model": model, "model_options": model_options,
                             "input_cond": cond, "input_uncond": uncond})
    else:
        result = uncond_pred + (cond_pred - uncond_pred) * cond_scale
    return post_cfg(model, result, cond, uncond, cond_pred, uncond_pred, cond_scale, x, timestep, model_options)


def guided_prediction(model: "SDDenoiser", x: Tensor, sigma: float) -> tuple[Tensor, Tensor | None]:
    """ComfyUI's sampling_function for the denoiser's positive / negative entries at cfg `model.cfg`: the guided
    x0 estimate and the unconditional one (after the pre-cfg functions; None when the negative was not run)."""
    options = model.model_options
    timestep = step_levels(model, x, sigma)
    uncond = model.negative if model.uses_negative else None
    conds = [model.positive, uncond]
    out = calc_cond_batch(model, conds, x, timestep, options)
    out = pre_cfg(model, conds, out, model.cfg, x, timestep, options)
    denoised = cfg_function(model, out[0], out[1], model.cfg, x, timestep, options, cond=model.positive,
                            uncond=uncond)
    return denoised, (out[1] if uncond else None)
