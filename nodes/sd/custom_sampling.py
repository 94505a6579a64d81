"""ComfyUI's custom-sampling nodes: sampling taken apart into a NOISE source, a GUIDER (the model with its
conditioning and guidance rule), a SAMPLER (an algorithm with its options) and SIGMAS (see `custom_sigmas`),
put back together by SamplerCustomAdvanced, or SamplerCustom for the usual cfg case.

They run on KSampler's path (`sampling.sample_guided`): the same noise, scaling in and out of the model's
space, noise mask and samplers, so RandomNoise + CFGGuider + KSamplerSelect + BasicScheduler gives KSampler's
latent bit for bit. As in ComfyUI, the sampler's own noise (ancestral steps, the SDE samplers' Brownian tree)
is seeded by the NOISE's seed, which is 0 for DisableNoise. (`sampling` registers these nodes, so they
import it only when they run.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from sdgraph.node import Boolean, Float, Input, Int, Node, Output
from sdgraph.types import CONDITIONING, LATENT, MODEL

from sdgraph.nodes.sd.cfg_pipeline import calc_cond_batch, cfg_function, sampler_hooks_set, step_levels
from sdgraph.nodes.sd.custom_sigmas import SIGMAS, as_sigmas, choice
from sdgraph.nodes.sd.denoiser import SDDenoiser
from sdgraph.nodes.sd.model_sampling import latent_format_of, model_sampling_of
from sdgraph.nodes.sd.k_samplers import SAMPLER_NAMES, DenoiseFn
from sdgraph.nodes.sd.noise import SEED_MAX, batch_noise

SAMPLER = "SAMPLER"
NOISE = "NOISE"
GUIDER = "GUIDER"
CUSTOM = "sampling/custom_sampling"
Tensor = torch.Tensor


# ---- the socket values --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerChoice:
    """A SAMPLER: a sampler of `k_samplers` by name, and the keyword options it is called with."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NoiseSource:
    """A NOISE: the seed of the initial (and the sampler's) noise, or no initial noise at all."""

    seed: int
    enabled: bool = True


class Guider:
    """A GUIDER: a model and a rule turning its conditioned predictions into one denoised estimate."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def denoiser(self, samples: Tensor, manager: Any, keep_uncond: bool = False) -> DenoiseFn:
        raise NotImplementedError


class CFGGuide(Guider):
    """Classifier-free guidance, exactly KSampler's (cfg 1: the positive side alone)."""

    def __init__(self, model: Any, positive: list, negative: list, cfg: float) -> None:
        super().__init__(model)
        self.positive, self.negative, self.cfg = positive, negative, cfg

    def denoiser(self, samples: Tensor, manager: Any, keep_uncond: bool = False) -> DenoiseFn:
        return SDDenoiser(self.model, self.positive, self.negative, self.cfg, samples, manager,
                          keep_uncond=keep_uncond)


def _as_negative(conditioning: list) -> list:
    """Entries marked to be sampled as the negative side (SDXL's refiner picks its aesthetic score by it)."""
    return [[c[0], {**(c[1] if len(c) > 1 and c[1] else {}), "prompt_type": "negative"}] for c in conditioning]


class ComposedDenoiser:
    """A guider's denoise function built on an SDDenoiser (`base`: its UNet, model sampling and entries), with
    the attributes the denoise mask function reads (ComfyUI's `model.inner_model.model_sampling`)."""

    def __init__(self, base: SDDenoiser) -> None:
        self.base = base

    @property
    def inner_model(self) -> SDDenoiser:
        return self.base

    @property
    def model_sampling(self) -> Any:
        return self.base.model_sampling

    def set_noise_mask(self, mask: Tensor | None) -> None:
        """The LATENT's noise mask, for an inpainting UNet's mask channel (see `SDDenoiser.set_noise_mask`)."""
        self.base.set_noise_mask(mask)


class DualCFGGuide(Guider):
    """Guidance with two positives: regular, negative + cfg2 (cond2 - negative) + cfg1 (cond1 - cond2);
    nested, negative + cfg2 (cond2 + cfg1 (cond1 - cond2) - negative)."""

    def __init__(self, model: Any, cond1: list, cond2: list, negative: list, cfg1: float, cfg2: float,
                 nested: bool) -> None:
        super().__init__(model)
        self.sides = (cond1, _as_negative(cond2), negative)
        self.cfg1, self.cfg2, self.nested = float(cfg1), float(cfg2), nested

    def denoiser(self, samples: Tensor, manager: Any, keep_uncond: bool = False) -> DenoiseFn:
        return _DualCFGDenoiser(self, samples, manager)


class _DualCFGDenoiser(ComposedDenoiser):
    """DualCFGGuide's rule on each side's own estimate; a MODEL with sampler-level hooks goes through ComfyUI's
    pipeline instead (one batched call of the three sides, the cfg function between cond2 and negative)."""

    def __init__(self, guide: DualCFGGuide, samples: Tensor, manager: Any) -> None:
        cond1, cond2, negative = guide.sides
        super().__init__(SDDenoiser(guide.model, cond1, [], 1.0, samples, manager))
        self.guide = guide
        self.hooked = sampler_hooks_set(self.base.model_options)
        if self.hooked:  # the three sides' entries all on the base denoiser
            self.middle, self.negative = self.base.prepare(cond2, "negative"), self.base.prepare(negative, "negative")
            self.sides: tuple[SDDenoiser, ...] = (self.base,)
        else:
            self.sides = (self.base, *(SDDenoiser(guide.model, side, [], 1.0, samples, manager)
                                       for side in (cond2, negative)))

    def set_noise_mask(self, mask: Tensor | None) -> None:
        for side in self.sides:
            side.set_noise_mask(mask)

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        cfg1, cfg2 = self.guide.cfg1, self.guide.cfg2
        if self.hooked:
            return self._hooked(x, float(sigma), cfg1, cfg2)
        d1, d2, dn = (side(x, sigma) for side in self.sides)
        if self.guide.nested:
            return dn + (d2 + (d1 - d2) * cfg1 - dn) * cfg2
        return dn + (d2 - dn) * cfg2 + (d1 - d2) * cfg1

    def _hooked(self, x: Tensor, sigma: float, cfg1: float, cfg2: float) -> Tensor:
        base, options = self.base, self.base.model_options
        timestep = step_levels(base, x, sigma)
        positive, middle, negative = base.positive, self.middle, self.negative
        if self.guide.nested:
            out = calc_cond_batch(base, [negative, middle, positive], x, timestep, options)
            inner = cfg_function(base, out[2], out[1], cfg1, x, timestep, options, cond=positive, uncond=middle)
            return out[0] + cfg2 * (inner - out[0])
        if not options.get("disable_cfg1_optimization") and math.isclose(cfg2, 1.0):
            negative = None
            middle = None if math.isclose(cfg1, 1.0) else middle
        out = calc_cond_batch(base, [negative, middle, positive], x, timestep, options)
        guided = cfg_function(base, out[1], out[0], cfg2, x, timestep, options, cond=middle, uncond=negative)
        return guided + (out[2] - out[1]) * cfg1


def _typed(value: Any, kind: type, where: str, socket: str) -> Any:
    if not isinstance(value, kind):
        raise ValueError(f"{where}: expected a {socket} (from a {socket.lower()} node), got {type(value).__name__}")
    return value


def _check_latent(latent: Any, where: str) -> dict[str, Any]:
    if not isinstance(latent, dict) or not isinstance(latent.get("samples"), Tensor):
        raise ValueError(f"{where}: expected a LATENT (a dict with a 'samples' tensor)")
    return latent


# ---- sampler objects ----------------------------------------------------------------------------------------

SAMPLERS = f"{CUSTOM}/samplers"
_OPTION = {"min": 0.0, "max": 100.0, "step": 0.01, "round": False}


def _option(name: str, default: float) -> Any:
    return Float(name, default, **_OPTION)


class KSamplerSelect(Node):
    """A sampler by name, with its default options (KSampler's sampler_name choices)."""

    category = SAMPLERS
    inputs = [choice("sampler_name", SAMPLER_NAMES)]
    outputs = [Output(SAMPLER)]

    def run(self, sampler_name: str) -> tuple[SamplerChoice]:
        return (SamplerChoice(sampler_name),)


class SamplerEulerAncestral(Node):
    """Euler ancestral with its noise options: eta scales the fresh noise's share of each step, s_noise the
    noise itself."""

    category = SAMPLERS
    inputs = [_option("eta", 1.0), _option("s_noise", 1.0)]
    outputs = [Output(SAMPLER)]

    def run(self, eta: float, s_noise: float) -> tuple[SamplerChoice]:
        return (SamplerChoice("euler_ancestral", {"eta": eta, "s_noise": s_noise}),)


class SamplerDPMPP_2S_Ancestral(Node):
    """DPM-Solver++(2S) ancestral with its eta and s_noise."""

    category = SAMPLERS
    inputs = [_option("eta", 1.0), _option("s_noise", 1.0)]
    outputs = [Output(SAMPLER)]

    def run(self, eta: float, s_noise: float) -> tuple[SamplerChoice]:
        return (SamplerChoice("dpmpp_2s_ancestral", {"eta": eta, "s_noise": s_noise}),)


class SamplerDPMPP_SDE(Node):
    """DPM-Solver++ SDE with eta, s_noise and r (where the second stage sits in the step). The Brownian noise
    is drawn on the CPU whichever noise_device is chosen, so both choices give the same picture."""

    category = SAMPLERS
    inputs = [_option("eta", 1.0), _option("s_noise", 1.0), _option("r", 0.5), choice("noise_device", ["gpu", "cpu"])]
    outputs = [Output(SAMPLER)]

    def run(self, eta: float, s_noise: float, r: float, noise_device: str) -> tuple[SamplerChoice]:
        if not r > 0.0:
            raise ValueError(f"SamplerDPMPP_SDE.r: must be above 0 (the second stage's place in the step), got {r}")
        return (SamplerChoice("dpmpp_sde", {"eta": eta, "s_noise": s_noise, "r": r}),)


class SamplerDPMPP_2M_SDE(Node):
    """DPM-Solver++(2M) SDE with its second-order rule (midpoint or heun), eta and s_noise; the Brownian noise
    is drawn on the CPU whichever noise_device is chosen."""

    category = SAMPLERS
    inputs = [choice("solver_type", ["midpoint", "heun"]), _option("eta", 1.0), _option("s_noise", 1.0),
              choice("noise_device", ["gpu", "cpu"])]
    outputs = [Output(SAMPLER)]

    def run(self, solver_type: str, eta: float, s_noise: float, noise_device: str) -> tuple[SamplerChoice]:
        return (SamplerChoice("dpmpp_2m_sde", {"eta": eta, "s_noise": s_noise, "solver_type": solver_type}),)


class SamplerLMS(Node):
    """Linear multistep with a chosen order (how many past derivatives each step uses)."""

    category = SAMPLERS
    inputs = [Int("order", 4, min=1, max=100, step=None)]
    outputs = [Output(SAMPLER)]

    def run(self, order: int) -> tuple[SamplerChoice]:
        return (SamplerChoice("lms", {"order": order}),)


# ---- noise and guiders --------------------------------------------------------------------------------------


class RandomNoise(Node):
    """Seeded noise, drawn as KSampler draws it for the same seed."""

    category = f"{CUSTOM}/noise"
    inputs = [Int("noise_seed", 0, min=0, max=SEED_MAX, step=None, control_after_generate=True)]
    outputs = [Output(NOISE)]

    def run(self, noise_seed: int) -> tuple[NoiseSource]:
        return (NoiseSource(noise_seed),)


class DisableNoise(Node):
    """No initial noise: sample the latent as it is (a later stage of a split schedule)."""

    category = f"{CUSTOM}/noise"
    outputs = [Output(NOISE)]

    def run(self) -> tuple[NoiseSource]:
        return (NoiseSource(0, enabled=False),)


class AddNoise(Node):
    """Noise a latent to the span of a schedule: the NOISE's draw times |first sigma - last sigma| (the first
    sigma alone for a one-sigma schedule) added in the model's space, as the model scales noise; an empty
    schedule leaves the latent as it is."""

    category = "_for_testing/custom_sampling/noise"
    inputs = [Input("model", MODEL), Input("noise", NOISE), Input("sigmas", SIGMAS), Input("latent_image", LATENT)]
    outputs = [Output(LATENT)]

    def run(self, model: Any, noise: NoiseSource, sigmas: Tensor, latent_image: dict[str, Any]
            ) -> tuple[dict[str, Any]]:
        source = _typed(noise, NoiseSource, "AddNoise.noise", NOISE)
        sigmas = as_sigmas(sigmas, "AddNoise.sigmas").float()  # ComfyUI's float32 arithmetic
        latent = _check_latent(latent_image, "AddNoise.latent_image")
        if len(sigmas) == 0:
            return (latent,)
        from sdgraph.nodes.sd.sampling import scale_in  # noqa: PLC0415 - it registers us

        samples = latent["samples"].float()
        drawn = batch_noise(source.seed, samples.shape, latent.get("batch_index")) if source.enabled \
            else torch.zeros_like(samples)
        span = (sigmas[0] - sigmas[-1]).abs() if len(sigmas) > 1 else sigmas[0]
        noisy = model_sampling_of(model).noise_scaling(span, drawn, scale_in(model, samples))
        noisy = latent_format_of(model).process_out(noisy)
        return ({**latent, "samples": torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0)},)


GUIDERS = f"{CUSTOM}/guiders"
_CFG = {"min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}


class BasicGuider(Node):
    """The model's prediction for one conditioning, without guidance."""

    category = GUIDERS
    inputs = [Input("model", MODEL), Input("conditioning", CONDITIONING)]
    outputs = [Output(GUIDER)]

    def run(self, model: Any, conditioning: list) -> tuple[Guider]:
        return (CFGGuide(model, conditioning, [], 1.0),)


class CFGGuider(Node):
    """Classifier-free guidance between a positive and a negative conditioning, KSampler's."""

    category = GUIDERS
    inputs = [Input("model", MODEL), Input("positive", CONDITIONING), Input("negative", CONDITIONING),
              Float("cfg", 8.0, **_CFG)]
    outputs = [Output(GUIDER)]

    def run(self, model: Any, positive: list, negative: list, cfg: float) -> tuple[Guider]:
        return (CFGGuide(model, positive, negative, cfg),)


class DualCFGGuider(Node):
    """Guidance by two conditionings against a negative: cfg_cond2_negative pulls from the negative towards
    cond2, cfg_conds from cond2 towards cond1 (added, or nested inside the first pull)."""

    category = GUIDERS
    inputs = [Input("model", MODEL), Input("cond1", CONDITIONING), Input("cond2", CONDITIONING),
              Input("negative", CONDITIONING), Float("cfg_conds", 8.0, **_CFG),
              Float("cfg_cond2_negative", 8.0, **_CFG), choice("style", ["regular", "nested"])]
    outputs = [Output(GUIDER)]

    def run(self, model: Any, cond1: list, cond2: list, negative: list, cfg_conds: float, cfg_cond2_negative: float,
            style: str) -> tuple[Guider]:
        return (DualCFGGuide(model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative, style == "nested"),)


# ---- the samplers -------------------------------------------------------------------------------------------

_OUTPUTS = [Output(LATENT, "output"), Output(LATENT, "denoised_output")]


def run_custom(node: Node, where: str, noise: NoiseSource, guider: Guider, sampler: SamplerChoice,
               sigmas: Any, latent: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Sample with the parts; the denoised output is the last step's estimate (the output itself when no
    step ran)."""
    latent = _check_latent(latent, f"{where}.latent_image")
    sigmas = as_sigmas(sigmas, f"{where}.sigmas")
    from sdgraph.nodes.sd.sampling import sample_guided, step_reporter  # noqa: PLC0415 - it registers us

    model = guider.model

    def guide(samples: Tensor, keep_uncond: bool) -> DenoiseFn:
        return guider.denoiser(samples, node.ctx.models, keep_uncond)

    out, denoised = sample_guided(model, guide, latent, seed=noise.seed, sampler_name=sampler.name, sigmas=sigmas,
                                  add_noise=noise.enabled, manager=node.ctx.models,
                                  on_step=step_reporter(node.ctx, model), sampler_options=sampler.options)
    return out, denoised if denoised is not None else out


class SamplerCustomAdvanced(Node):
    """Sample a latent from its parts: noise, guider, sampler and sigmas."""

    cobatch = True

    category = CUSTOM
    inputs = [Input("noise", NOISE), Input("guider", GUIDER), Input("sampler", SAMPLER), Input("sigmas", SIGMAS),
              Input("latent_image", LATENT)]
    outputs = _OUTPUTS

    def run(self, noise: NoiseSource, guider: Guider, sampler: SamplerChoice, sigmas: Tensor,
            latent_image: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        where = "SamplerCustomAdvanced"
        return run_custom(self, where, _typed(noise, NoiseSource, f"{where}.noise", NOISE),
                          _typed(guider, Guider, f"{where}.guider", GUIDER),
                          _typed(sampler, SamplerChoice, f"{where}.sampler", SAMPLER), sigmas, latent_image)


class SamplerCustom(Node):
    """Sample with classifier-free guidance, a SAMPLER and SIGMAS; add_noise off samples the latent as it is."""

    cobatch = True

    category = CUSTOM
    inputs = [Input("model", MODEL), Boolean("add_noise", True),
              Int("noise_seed", 0, min=0, max=SEED_MAX, step=None, control_after_generate=True),
              Float("cfg", 8.0, **_CFG), Input("positive", CONDITIONING), Input("negative", CONDITIONING),
              Input("sampler", SAMPLER), Input("sigmas", SIGMAS), Input("latent_image", LATENT)]
    outputs = _OUTPUTS

    def run(self, model: Any, add_noise: bool, noise_seed: int, cfg: float, positive: list, negative: list,
            sampler: SamplerChoice, sigmas: Tensor, latent_image: dict[str, Any]
            ) -> tuple[dict[str, Any], dict[str, Any]]:
        # unlike DisableNoise, the seed still drives the sampler's own noise here, as in ComfyUI
        noise = NoiseSource(noise_seed, enabled=bool(add_noise))
        return run_custom(self, "SamplerCustom", noise, CFGGuide(model, positive, negative, cfg),
                          _typed(sampler, SamplerChoice, "SamplerCustom.sampler", SAMPLER), sigmas, latent_image)


NODES: Sequence[type[Node]] = [
    SamplerCustomAdvanced, SamplerCustom, KSamplerSelect, SamplerEulerAncestral, SamplerDPMPP_2S_Ancestral,
    SamplerDPMPP_SDE, SamplerDPMPP_2M_SDE, SamplerLMS, RandomNoise, DisableNoise, AddNoise, BasicGuider, CFGGuider,
    DualCFGGuider]
