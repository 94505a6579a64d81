"""KSampler and KSamplerAdvanced: denoise a latent with a model, conditioning, a sampler and a sigma schedule.

Inputs, their order and the step semantics are ComfyUI's, so exported API workflows run unchanged:

- KSampler with denoise < 1 computes the schedule for int(steps / denoise) steps and keeps its last `steps`;
- KSamplerAdvanced keeps steps [start_at_step, end_at_step) of a `steps`-step schedule, ends at sigma 0 unless
  return_with_leftover_noise is enabled, and adds no noise when add_noise is disabled.

Noise comes from seeded CPU generators (see `noise`). When the first sigma is the model's sigma_max (or above), the
noise is scaled by sqrt(1 + sigma_0^2), as ComfyUI does; anywhere below it (img2img, later KSamplerAdvanced stages,
a schedule such as ddim_uniform that starts under the top) by sigma_0.

LATENT samples are unscaled (ComfyUI's convention). Sampling works in the model's space, in ComfyUI's order: the
input latent is scaled in with the MODEL's latent format (an all-zero latent, EmptyLatentImage's, is left as it
is: empty, not shifted), the noise is added there, the noise mask blends with that scaled latent at every step,
and the result is scaled out. Progress previews see the denoised estimate in the model's space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from sdgraph.context import NodeContext
from sdgraph.limits import Limits, check_count, current_limits, refusal
from sdgraph.node import Combo, Float, Input, Int, Node, Output
from sdgraph.paths import Dirs
from sdgraph.types import CONDITIONING, LATENT, MODEL

from sdgraph.nodes.sd.cfg_pipeline import levels
from sdgraph.nodes.sd.denoiser import SDDenoiser, _resize_mask
from sdgraph.nodes.sd.k_cfgpp import CFG_PP_SAMPLERS
from sdgraph.nodes.sd.k_sa_solver import sa_tau_interval
from sdgraph.nodes.sd.k_samplers import SAMPLER_NAMES, DenoiseFn, NoiseSampler, Step, get_sampler
from sdgraph.nodes.sd.k_upscale import RESIZING_SAMPLERS
from sdgraph.nodes.sd.model_sampling import ModelSampling, latent_format_of, model_sampling_of
from sdgraph.nodes.sd.noise import (BROWNIAN_SAMPLERS, SEED_MAX, SeededNoise, brownian_sampler, continued_noise,
                                   initial_noise, to_device)
from sdgraph.nodes.sd.preview import jpeg_preview, previews_enabled
from sdgraph.nodes.sd.schedules import SCHEDULER_NAMES, compute_sigmas
from sdgraph.nodes.sd.unclip import sampling_seed


@dataclass
class Plan:
    """The sigmas to sample and whether they start at the top of the full schedule."""

    sigmas: torch.Tensor  # float64 CPU
    from_start: bool


def schedule_length(steps: int, denoise: float | None = 1.0) -> int:
    """Sigmas-to-be of ComfyUI's denoise truncation: a schedule of steps / denoise steps, of which `steps` run."""
    if denoise is None or denoise > 0.9999:
        return steps
    return 0 if denoise <= 0.0 else int(steps / denoise)


def check_schedule(limits: Limits, where: str, steps: int, denoise: float | None = 1.0) -> None:
    """Refuse a schedule over the length limit before computing it."""
    check_count(where, f"the schedule length (steps / denoise = {steps} / {denoise})",
                schedule_length(steps, denoise), limits.max_schedule_steps, "--max-schedule-steps")


# These samplers get a schedule of one step more without its next-to-last sigma, as in ComfyUI.
DISCARD_PENULTIMATE = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


def sampler_sigmas(sampling: Any, scheduler: str, steps: int, sampler_name: str | None = None) -> torch.Tensor:
    """The schedule's sigmas for `steps` steps of a model sampling, as the named sampler is given them."""
    if sampler_name not in DISCARD_PENULTIMATE or steps <= 0:
        return compute_sigmas(sampling, scheduler, steps)
    sigmas = compute_sigmas(sampling, scheduler, steps + 1)
    return torch.cat([sigmas[:-2], sigmas[-1:]])


def plan_sigmas(model: Any, scheduler: str, steps: int, denoise: float = 1.0, start_step: int | None = None,
                last_step: int | None = None, force_full_denoise: bool = False,
                sampler_name: str | None = None) -> Plan:
    """ComfyUI's step selection: denoise truncation, then [start_step, last_step] of the schedule of the MODEL's
    model sampling."""
    sampling = model_sampling_of(model)
    from_start = True
    if denoise is None or denoise > 0.9999:
        sigmas = sampler_sigmas(sampling, scheduler, steps, sampler_name)
    elif denoise <= 0.0:
        sigmas = torch.zeros(0, dtype=torch.float64)
    else:
        total = schedule_length(steps, denoise)
        sigmas = sampler_sigmas(sampling, scheduler, total, sampler_name)[-(steps + 1):]
        from_start = total == steps
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[:last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0.0
    if start_step is not None and start_step > 0:
        sigmas = sigmas[start_step:] if start_step < len(sigmas) - 1 else sigmas[:0]
        from_start = False
    return Plan(sigmas, from_start)


def max_denoise(sigma_0: float, sigma_max: float) -> bool:
    """Whether sampling starts at the top of the model's range, where the initial noise gets sqrt(1 + sigma^2)."""
    return math.isclose(sigma_0, sigma_max, rel_tol=1e-5) or sigma_0 > sigma_max


def scale_in(model: Any, samples: torch.Tensor) -> torch.Tensor:
    """LATENT samples in the model's space; an all-zero (empty) latent stays zero, as in ComfyUI."""
    if not torch.count_nonzero(samples):
        return samples
    return latent_format_of(model).process_in(samples)


def sample_latent(model: Any, positive: list, negative: list, latent: dict[str, Any], *, seed: int, cfg: float,
                  sampler_name: str, plan: Plan, add_noise: bool = True, manager: Any = None,
                  on_step: Callable[[Step, int], None] | None = None,
                  noise_sampler: NoiseSampler | None = None, per_item_noise: bool = False) -> dict[str, Any]:
    """Sample a LATENT (unscaled samples in and out; see the module docstring); returns a new LATENT dict (CPU
    float32 samples, other keys kept). `per_item_noise` seeds each batch item on its own (see `noise`) instead
    of ComfyUI's one stream for the batch."""
    def guide(samples: torch.Tensor, keep_uncond: bool) -> DenoiseFn:
        return SDDenoiser(model, positive, negative, cfg, samples, manager, keep_uncond=keep_uncond)

    return sample_guided(model, guide, latent, seed=seed, sampler_name=sampler_name, sigmas=plan.sigmas,
                         add_noise=add_noise, manager=manager, on_step=on_step, noise_sampler=noise_sampler,
                         per_item_noise=per_item_noise)[0]


# ---- sampling with a given guider and sigmas (KSampler's path, open to the custom-sampling nodes) ----------


def sample_guided(model: Any, guide: Callable[[torch.Tensor, bool], DenoiseFn], latent: dict[str, Any], *, seed: int,
                  sampler_name: str, sigmas: torch.Tensor, add_noise: bool = True, manager: Any = None,
                  on_step: Callable[[Step, int], None] | None = None, noise_sampler: NoiseSampler | None = None,
                  per_item_noise: bool = False, sampler_options: dict[str, Any] | None = None,
                  ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """`sample_latent` with the denoiser built by `guide(samples, keep_uncond)` (classifier-free guidance or
    another rule; `keep_uncond`: the CFG++ samplers also need the unconditional estimate),
    the sigmas given as they are, and the named sampler called with `sampler_options` (eta, r, order, ...; see
    `call_sampler`). Returns the sampled LATENT and the last denoised estimate as a LATENT (unscaled), or None
    when no step ran."""
    samples = latent["samples"]
    if len(sigmas) < 2:
        return dict(latent), None
    options = {**model_sampler_options(sampler_name, model), **(sampler_options or {})}
    batch_index = latent.get("batch_index")
    noise, seeded = initial_noise(seed, samples, batch_index, per_item_noise)
    if not add_noise:  # as ComfyUI: no initial noise, so the noise mask's blend renoises nothing either
        noise = torch.zeros_like(noise)
    device = torch.device(model.compute_device(manager))
    ms = model_sampling_of(model)
    last: list[torch.Tensor] = []
    with torch.inference_mode():
        # scaled on the CPU, where the emptiness check reads nothing back from the device
        clean = to_device(scale_in(model, samples.float()), device)
        sigma_0 = float(sigmas[0])
        x = clean  # every SD parametrisation adds the scaled noise to the latent: no noise leaves it as it is
        if add_noise:
            x = ms.noise_scaling(sigma_0, to_device(noise, device), clean, max_denoise(sigma_0, float(ms.sigma_max)))
        with sampling_seed(seed):  # unCLIP models draw their embedding noise from it
            denoiser = guide(samples, sampler_name in CFG_PP_SAMPLERS)
        denoise: DenoiseFn = denoiser
        mask = latent.get("noise_mask")
        if mask is not None and sampler_name in RESIZING_SAMPLERS and options.get("total_upscale", 2.0) != 1.0:
            raise ValueError(f"{sampler_name}: a latent with a noise_mask cannot change size while it is sampled "
                             "(remove the mask, or sample at scale_ratio 1)")
        if mask is not None and hasattr(denoiser, "set_noise_mask"):  # an inpainting UNet's mask channel
            denoiser.set_noise_mask(mask)
        if mask is not None:
            mask = _resize_mask(mask, *samples.shape[-2:]).to(device)
            masking = _MaskFunction(getattr(model, "model_options", {}).get("denoise_mask_function"), denoiser,
                                    sigmas)
            denoise = _inpainting(denoiser, clean, to_device(noise, device), mask, ms, masking)
        total = len(sigmas) - 1

        def callback(step: Step) -> None:
            last[:] = [step.denoised]
            if on_step is not None:
                on_step(step, total)

        out = call_sampler(sampler_name, denoise, x, sigmas, seed=seed, seeded=seeded, options=options,
                           batch_index=batch_index, per_item_noise=per_item_noise, noise_sampler=noise_sampler,
                           callback=callback)
        out = ms.inverse_noise_scaling(float(sigmas[-1]), out)
        latent_format = latent_format_of(model)
        result = latent_format.process_out(out.float()).cpu()
        denoised = latent_format.process_out(last[0].float()).cpu() if last else None
    return {**latent, "samples": result}, (None if denoised is None else {**latent, "samples": denoised})


def call_sampler(sampler_name: str, denoise: DenoiseFn, x: torch.Tensor, sigmas: torch.Tensor, *, seed: int,
                 seeded: SeededNoise, options: dict[str, Any], batch_index: Any = None, per_item_noise: bool = False,
                 noise_sampler: NoiseSampler | None = None, callback: Callable[[Step], None] | None = None
                 ) -> torch.Tensor:
    """Run the named sampler from x (noised to sigmas[0]) with its noise sources as KSampler gives them (the
    seeded generator `seeded`, or the Brownian tree of the SDE samplers; a `noise_like` for the samplers that
    resize the latent) and its options; an "s_noise" option scales the sampler's noise."""
    options = dict(options)
    s_noise = float(options.pop("s_noise", 1.0))
    if noise_sampler is None:
        brownian = sampler_name in BROWNIAN_SAMPLERS and not per_item_noise
        noise_sampler = brownian_sampler(seed, x, sigmas.tolist()) if brownian else seeded.sampler(x)
    if sampler_name in RESIZING_SAMPLERS:
        options["noise_like"] = _noise_like(seed, x.shape, batch_index, seeded, per_item_noise)
    if s_noise != 1.0:
        noise_sampler = _scaled(noise_sampler, s_noise)
    return get_sampler(sampler_name)(denoise, x, sigmas, callback=callback, noise_sampler=noise_sampler, **options)


def _noise_like(seed: int, shape: torch.Size, batch_index: Any, seeded: SeededNoise, per_item: bool
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Noise of any shape for the samplers that resize the latent, going on from the initial noise's
    generator(s) as ComfyUI's randn_like goes on from its seeded global generator."""
    if not per_item:
        return continued_noise(seed, shape, batch_index)
    return lambda x: to_device(seeded.draw(x.shape[1:]), x.device, x.dtype)


def _scaled(noise_sampler: NoiseSampler, factor: float) -> NoiseSampler:
    """The sampler's noise times `factor` (k-diffusion's s_noise), keeping its Brownian mark."""

    def sample(sigma: float, sigma_next: float) -> torch.Tensor:
        return noise_sampler(sigma, sigma_next) * factor

    if getattr(noise_sampler, "brownian", False):
        sample.brownian = True  # type: ignore[attr-defined]
    return sample


def model_sampler_options(sampler_name: str, model: Any) -> dict[str, Any]:
    """What a sampler needs to know of the model beyond the denoiser: SA-Solver its stochastic sigma interval."""
    if sampler_name in ("sa_solver", "sa_solver_pece"):
        return {"tau_interval": sa_tau_interval(model_sampling_of(model))}
    return {}


@dataclass
class _MaskFunction:
    """The MODEL's "denoise_mask_function" (ComfyUI's: (sigma [B], mask, extra_options={"model", "sigmas"}) -> the
    mask this call uses), or the mask as it is when there is none."""

    function: Callable[..., torch.Tensor] | None
    model: Any
    sigmas: torch.Tensor

    def __call__(self, mask: torch.Tensor, x: torch.Tensor, sigma: float) -> torch.Tensor:
        if self.function is None:
            return mask
        if self.sigmas.device != x.device or self.sigmas.dtype != torch.float32:
            self.sigmas = self.sigmas.to(device=x.device, dtype=torch.float32)  # once, not per step
        return self.function(levels(x, sigma), mask, extra_options={"model": self.model, "sigmas": self.sigmas})


def _inpainting(inner: DenoiseFn, clean: torch.Tensor, noise: torch.Tensor, mask: torch.Tensor, ms: ModelSampling,
                masking: _MaskFunction) -> DenoiseFn:
    """Keep the unmasked region on the original latent's trajectory: renoise it to sigma before each call and
    replace the model's estimate there by the original latent."""

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        known = ms.noise_scaling(sigma, noise, clean)
        m = masking(mask, x, sigma)
        return torch.lerp(clean, inner(torch.lerp(known, x, m), sigma), m)

    def with_uncond(x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        # for the CFG++ samplers; as in ComfyUI, the unconditional estimate is the model's, not blended
        known = ms.noise_scaling(sigma, noise, clean)
        m = masking(mask, x, sigma)
        denoised, uncond = inner.with_uncond(torch.lerp(known, x, m), sigma)
        return torch.lerp(clean, denoised, m), uncond

    if hasattr(inner, "with_uncond"):
        denoise.with_uncond = with_uncond  # type: ignore[attr-defined]
    return denoise


def step_reporter(ctx: NodeContext, model: Any) -> Callable[[Step, int], None]:
    """Progress (and interrupt check) after every step, with a latent preview when the settings ask for one."""
    previews = previews_enabled(ctx.services.settings)
    sdxl = bool(getattr(model, "is_sdxl", False))

    def report(step: Step, total: int) -> None:
        preview = jpeg_preview(step.denoised, sdxl) if previews else None
        ctx.progress(step.i + 1, total, preview)

    return report


# ---- nodes --------------------------------------------------------------------------------------------------


def _shared_inputs() -> dict[str, Any]:
    return {
        "steps": Int("steps", 20, min=1, max=10000),
        "cfg": Float("cfg", 8.0, min=0.0, max=100.0, step=0.1, round=0.01),
        "sampler_name": Combo("sampler_name", SAMPLER_NAMES),
        "scheduler": Combo("scheduler", SCHEDULER_NAMES),
        "positive": Input("positive", CONDITIONING),
        "negative": Input("negative", CONDITIONING),
        "latent_image": Input("latent_image", LATENT),
    }


_S = _shared_inputs()


class KSampler(Node):
    """Denoise a latent: txt2img from an empty latent, img2img with denoise below 1."""

    cobatch = True

    category = "sampling"
    inputs = [Input("model", MODEL), Int("seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
              _S["steps"], _S["cfg"], _S["sampler_name"], _S["scheduler"], _S["positive"], _S["negative"],
              _S["latent_image"], Float("denoise", 1.0, min=0.0, max=1.0, step=0.01)]
    outputs = [Output(LATENT)]

    def run(self, model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
            positive: list, negative: list, latent_image: dict, denoise: float = 1.0) -> tuple[dict]:
        check_schedule(self.ctx.limits, "KSampler.denoise", steps, denoise)
        plan = plan_sigmas(model, scheduler, steps, denoise, sampler_name=sampler_name)
        return (sample_latent(model, positive, negative, latent_image, seed=seed, cfg=cfg,
                              sampler_name=sampler_name, plan=plan, manager=self.ctx.models,
                              on_step=step_reporter(self.ctx, model)),)

    @classmethod
    def validate_inputs(cls, dirs: Dirs, steps: int = 20, denoise: float = 1.0, **_: Any) -> str | None:
        return refusal(lambda: check_schedule(current_limits(), "KSampler.denoise", steps, denoise))


class KSamplerAdvanced(Node):
    """Run part of a schedule: steps [start_at_step, end_at_step), optionally without adding noise or keeping
    the leftover noise, to chain samplers (base + refiner, hires passes)."""

    cobatch = True

    category = "sampling"
    inputs = [Input("model", MODEL), Combo("add_noise", ["enable", "disable"]),
              Int("noise_seed", 0, min=0, max=SEED_MAX, control_after_generate=True),
              _S["steps"], _S["cfg"], _S["sampler_name"], _S["scheduler"], _S["positive"], _S["negative"],
              _S["latent_image"], Int("start_at_step", 0, min=0, max=10000),
              Int("end_at_step", 10000, min=0, max=10000),
              Combo("return_with_leftover_noise", ["disable", "enable"])]
    outputs = [Output(LATENT)]

    def run(self, model: Any, add_noise: str, noise_seed: int, steps: int, cfg: float, sampler_name: str,
            scheduler: str, positive: list, negative: list, latent_image: dict, start_at_step: int,
            end_at_step: int, return_with_leftover_noise: str) -> tuple[dict]:
        check_schedule(self.ctx.limits, "KSamplerAdvanced.steps", steps)
        plan = plan_sigmas(model, scheduler, steps, 1.0, start_at_step, end_at_step,
                           force_full_denoise=return_with_leftover_noise != "enable", sampler_name=sampler_name)
        return (sample_latent(model, positive, negative, latent_image, seed=noise_seed, cfg=cfg,
                              sampler_name=sampler_name, plan=plan, add_noise=add_noise == "enable",
                              manager=self.ctx.models, on_step=step_reporter(self.ctx, model)),)

    @classmethod
    def validate_inputs(cls, dirs: Dirs, steps: int = 20, **_: Any) -> str | None:
        return refusal(lambda: check_schedule(current_limits(), "KSamplerAdvanced.steps", steps))


# the custom-sampling set (SamplerCustomAdvanced and its parts) is built on this module's sample_guided; they
# import this module lazily
from sdgraph.nodes.sd import custom_samplers, custom_sampling, custom_schedulers, custom_sigmas  # noqa: E402
from sdgraph.nodes.sd import hypernetwork, token_merging, unet_patches  # noqa: E402 - the UNet-level model patches
from sdgraph.nodes.sd import gligen  # noqa: E402 - GLIGEN boxes, applied by the denoiser
from sdgraph.nodes.sd import cfg_patches, model_sampling_nodes, perp_neg  # noqa: E402 - sampler-level MODEL patches
from sdgraph.nodes.sd import attention_guidance  # noqa: E402 - guidance that reruns the UNet (PAG, SAG)

NODES = [KSampler, KSamplerAdvanced, *custom_sampling.NODES, *custom_samplers.NODES, *custom_sigmas.NODES,
         *custom_schedulers.NODES, *unet_patches.NODES, *token_merging.NODES, *hypernetwork.NODES, *gligen.NODES,
         *perp_neg.NODES, *model_sampling_nodes.NODES, *cfg_patches.NODES, *attention_guidance.NODES]
