"""The custom-sampling nodes (SamplerCustomAdvanced and its parts) on the tiny SD1 model: ComfyUI's specs, and
KSampler's latents bit for bit when the parts are KSampler's."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import call
from sdgraph.nodes.sd import custom_sampling as cs
from sdgraph.nodes.sd import custom_sigmas as sg
from sdgraph.nodes.sd import sampling
from sdgraph.nodes.sd.conditioning import TextEncode
from sdgraph.nodes.sd.k_samplers import SAMPLER_NAMES
from sdgraph.nodes.sd.sampling import KSampler, KSamplerAdvanced, plan_sigmas
from sdgraph.nodes.sd.schedules import SCHEDULER_NAMES, compute_sigmas, schedule_of
from sdgraph.registry import Registry

REFERENCE = Path("/work/shared/reference/comfyui-core-nodes.json")
# combos whose choices are sdgraph's lists (those it implements, a subset of ComfyUI's)
OWN_CHOICES = {("KSamplerSelect", "sampler_name"): SAMPLER_NAMES, ("BasicScheduler", "scheduler"): SCHEDULER_NAMES}
ADDED = [*cs.NODES, *sg.NODES]


@pytest.fixture(scope="module")
def parts(sd1: Any, dirs: Any, manager: Any) -> dict[str, Any]:
    from conftest import make_ctx

    model, clip, _ = sd1
    ctx = make_ctx(dirs, manager)
    positive = call(TextEncode, ctx, text="a red circle", clip=clip)[0]
    negative = call(TextEncode, ctx, text="blue", clip=clip)[0]
    third = call(TextEncode, ctx, text="a green square", clip=clip)[0]
    g = torch.Generator().manual_seed(5)
    return {"model": model, "positive": positive, "negative": negative, "third": third, "empty": {"samples": torch.zeros(1, 4, 8, 8)},
            "image": {"samples": torch.randn(1, 4, 8, 8, generator=g) * 3}}


def advanced(ctx: Any, noise: Any, guider: Any, sampler: Any, sigmas: Any, latent: dict) -> tuple[dict, dict]:
    return call(cs.SamplerCustomAdvanced, ctx, noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                latent_image=latent)


def guider(ctx: Any, p: dict, cfg: float = 6.0) -> Any:
    return call(cs.CFGGuider, ctx, model=p["model"], positive=p["positive"], negative=p["negative"], cfg=cfg)[0]


def select(ctx: Any, name: str) -> Any:
    return call(cs.KSamplerSelect, ctx, sampler_name=name)[0]


def basic(ctx: Any, p: dict, scheduler: str, steps: int, denoise: float = 1.0) -> torch.Tensor:
    return call(sg.BasicScheduler, ctx, model=p["model"], scheduler=scheduler, steps=steps, denoise=denoise)[0]


def noise(ctx: Any, seed: int) -> Any:
    return call(cs.RandomNoise, ctx, noise_seed=seed)[0]


def ksampler(ctx: Any, p: dict, latent: dict, **kw: Any) -> torch.Tensor:
    inputs = dict(model=p["model"], seed=3, steps=4, cfg=6.0, sampler_name="euler", scheduler="normal",
                  positive=p["positive"], negative=p["negative"], latent_image=latent, denoise=1.0)
    inputs.update(kw)
    return call(KSampler, ctx, **inputs)[0]["samples"]


# ---- specs --------------------------------------------------------------------------------------------------


def _plain(entry: Any) -> Any:
    return [entry[0]] if isinstance(entry, list) and len(entry) == 2 and entry[1] == {} else entry


def test_specs_are_comfyuis() -> None:
    reference = json.loads(REFERENCE.read_text())
    registry = Registry()
    registry.add_native(sampling.NODES, "sd-sampling")
    assert not registry.problems
    described = registry.describe()
    for cls in ADDED:
        name = cls.__name__
        ours, theirs = described[name], reference[name]
        for key in ("input_order", "output", "output_name", "category"):
            assert ours[key] == theirs[key], (name, key)
        assert ours["input"].keys() == theirs["input"].keys(), name
        for section, entries in theirs["input"].items():
            assert list(ours["input"][section]) == list(entries), (name, section)
            for input_name, entry in entries.items():
                mine = ours["input"][section][input_name]
                if (name, input_name) in OWN_CHOICES:
                    assert mine == [list(OWN_CHOICES[name, input_name])] and set(mine[0]) <= set(entry[0])
                    continue
                assert _plain(mine) == _plain(entry), (name, input_name, mine, entry)


# ---- KSampler's latents, bit for bit ------------------------------------------------------------------------

CASES = [("euler", "normal", 1.0), ("euler_ancestral", "karras", 1.0), ("dpmpp_2m", "karras", 1.0),
         ("dpmpp_sde", "karras", 1.0), ("dpmpp_2m_sde", "exponential", 1.0), ("heun", "normal", 1.0),
         ("lms", "karras", 1.0), ("euler", "normal", 0.6), ("euler_ancestral", "karras", 0.5),
         ("dpmpp_2m_sde", "karras", 0.7)]


@pytest.mark.parametrize("sampler_name,scheduler,denoise", CASES)
def test_custom_advanced_is_ksampler(ctx: Any, parts: dict, sampler_name: str, scheduler: str, denoise: float) -> None:
    latent = parts["image"] if denoise < 1 else parts["empty"]
    expected = ksampler(ctx, parts, latent, sampler_name=sampler_name, scheduler=scheduler, denoise=denoise, seed=11)
    sigmas = basic(ctx, parts, scheduler, 4, denoise)
    out, _ = advanced(ctx, noise(ctx, 11), guider(ctx, parts), select(ctx, sampler_name), sigmas, latent)
    assert torch.equal(out["samples"], expected)
    other, _ = advanced(ctx, noise(ctx, 12), guider(ctx, parts), select(ctx, sampler_name), sigmas, latent)
    assert not torch.equal(other["samples"], expected)


@pytest.mark.parametrize("sampler_name", ["euler", "dpmpp_sde"])
def test_sampler_custom_is_ksampler(ctx: Any, parts: dict, sampler_name: str) -> None:
    expected = ksampler(ctx, parts, parts["empty"], sampler_name=sampler_name, scheduler="karras", seed=4, cfg=4.0)
    out, _ = call(cs.SamplerCustom, ctx, model=parts["model"], add_noise=True, noise_seed=4, cfg=4.0,
                  positive=parts["positive"], negative=parts["negative"], sampler=select(ctx, sampler_name),
                  sigmas=basic(ctx, parts, "karras", 4), latent_image=parts["empty"])
    assert torch.equal(out["samples"], expected)


def test_basic_scheduler_is_ksamplers_schedule(ctx: Any, parts: dict) -> None:
    for scheduler in SCHEDULER_NAMES:
        for denoise in (1.0, 0.45):
            sigmas = basic(ctx, parts, scheduler, 5, denoise)
            assert torch.equal(sigmas, plan_sigmas(parts["model"], scheduler, 5, denoise).sigmas)
    assert len(basic(ctx, parts, "normal", 5, 0.0)) == 0


def test_denoised_output_is_the_last_estimate(ctx: Any, parts: dict) -> None:
    """Euler's last step goes from x_prev to lerp(denoised, x_prev, s_k / s_k-1): the denoised output is that
    step's estimate (checked from the run one step shorter), not the output."""
    sigmas = basic(ctx, parts, "normal", 6)
    make = lambda s: advanced(ctx, noise(ctx, 2), guider(ctx, parts), select(ctx, "euler"), s, parts["empty"])
    prev, _ = make(sigmas[:3])
    out, denoised = make(sigmas[:4])
    ratio = float(sigmas[3] / sigmas[2])
    assert not torch.allclose(out["samples"], denoised["samples"], atol=1e-2)
    assert torch.allclose(torch.lerp(denoised["samples"], prev["samples"], ratio), out["samples"], atol=1e-5)
    full, last = make(sigmas)
    assert torch.allclose(full["samples"], last["samples"], atol=1e-6)  # the final Euler step lands on it


@pytest.mark.parametrize("sampler_name", ["euler", "euler_ancestral"])
def test_disable_noise_is_ksampler_advanced_without_noise(ctx: Any, parts: dict, sampler_name: str) -> None:
    """No initial noise; the sampler's own noise is seeded by 0, as ComfyUI's DisableNoise does."""
    expected = call(KSamplerAdvanced, ctx, model=parts["model"], add_noise="disable", noise_seed=0, steps=6, cfg=6.0,
                    sampler_name=sampler_name, scheduler="normal", positive=parts["positive"],
                    negative=parts["negative"], latent_image=parts["image"], start_at_step=2, end_at_step=10000,
                    return_with_leftover_noise="disable")[0]["samples"]
    high, low = call(sg.SplitSigmas, ctx, sigmas=basic(ctx, parts, "normal", 6), step=2)
    out, _ = advanced(ctx, call(cs.DisableNoise, ctx)[0], guider(ctx, parts), select(ctx, sampler_name), low,
                      parts["image"])
    assert torch.equal(out["samples"], expected)


def test_split_sigmas_in_two_runs_equal_one(ctx: Any, parts: dict) -> None:
    sigmas = basic(ctx, parts, "karras", 8)
    high, low = call(sg.SplitSigmas, ctx, sigmas=sigmas, step=3)
    assert torch.equal(torch.cat([high, low[1:]]), sigmas) and high[-1] == low[0]
    whole, _ = advanced(ctx, noise(ctx, 9), guider(ctx, parts), select(ctx, "euler"), sigmas, parts["empty"])
    first, _ = advanced(ctx, noise(ctx, 9), guider(ctx, parts), select(ctx, "euler"), high, parts["empty"])
    second, _ = advanced(ctx, call(cs.DisableNoise, ctx)[0], guider(ctx, parts), select(ctx, "euler"), low, first)
    assert torch.allclose(second["samples"], whole["samples"], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(first["samples"], whole["samples"], atol=1e-2)


# ---- sampler options ----------------------------------------------------------------------------------------


def test_sampler_nodes_at_their_defaults_are_the_named_samplers(ctx: Any, parts: dict) -> None:
    sigmas = basic(ctx, parts, "karras", 4)
    run = lambda s: advanced(ctx, noise(ctx, 6), guider(ctx, parts), s, sigmas, parts["empty"])[0]["samples"]
    pairs = [(call(cs.SamplerEulerAncestral, ctx, eta=1.0, s_noise=1.0)[0], "euler_ancestral"),
             (call(cs.SamplerDPMPP_2S_Ancestral, ctx, eta=1.0, s_noise=1.0)[0], "dpmpp_2s_ancestral"),
             (call(cs.SamplerDPMPP_SDE, ctx, eta=1.0, s_noise=1.0, r=0.5, noise_device="gpu")[0], "dpmpp_sde"),
             (call(cs.SamplerLMS, ctx, order=4)[0], "lms")]
    for node_sampler, name in pairs:
        assert torch.equal(run(node_sampler), run(select(ctx, name))), name


def test_sampler_options_change_the_sampling(ctx: Any, parts: dict) -> None:
    sigmas = basic(ctx, parts, "karras", 4)
    run = lambda s: advanced(ctx, noise(ctx, 6), guider(ctx, parts), s, sigmas, parts["empty"])[0]["samples"]
    euler = run(select(ctx, "euler"))
    # eta 0: no fresh noise, the deterministic step; s_noise 0 removes the noise but keeps the smaller step
    assert torch.equal(run(call(cs.SamplerEulerAncestral, ctx, eta=0.0, s_noise=1.0)[0]), euler)
    quiet = run(call(cs.SamplerEulerAncestral, ctx, eta=1.0, s_noise=0.0)[0])
    loud = run(call(cs.SamplerEulerAncestral, ctx, eta=1.0, s_noise=1.0)[0])
    assert not torch.allclose(quiet, euler, atol=1e-3) and not torch.allclose(quiet, loud, atol=1e-3)
    zeros = lambda a, b: torch.zeros(1, 4, 8, 8)
    g = call(cs.CFGGuider, ctx, model=parts["model"], positive=parts["positive"], negative=parts["negative"],
             cfg=6.0)[0]
    guide = lambda s, keep_uncond: g.denoiser(s, ctx.models, keep_uncond)  # noqa: E731
    silent, _ = sampling.sample_guided(parts["model"], guide, parts["empty"], seed=6,
                                       sampler_name="euler_ancestral", sigmas=sigmas, manager=ctx.models,
                                       noise_sampler=zeros)
    assert torch.allclose(quiet, silent["samples"], atol=1e-6)
    # LMS of order 1 is Euler's method
    assert torch.allclose(run(call(cs.SamplerLMS, ctx, order=1)[0]), euler, atol=1e-4)
    assert not torch.allclose(run(call(cs.SamplerLMS, ctx, order=3)[0]), euler, atol=1e-3)
    with pytest.raises(ValueError, match="SamplerDPMPP_SDE.r"):
        call(cs.SamplerDPMPP_SDE, ctx, eta=1.0, s_noise=1.0, r=0.0, noise_device="cpu")


# ---- guiders ------------------------------------------------------------------------------------------------


def test_guiders_follow_comfyuis_formulas(ctx: Any, parts: dict) -> None:
    model, pos, neg = parts["model"], parts["positive"], parts["negative"]
    third = parts["third"]
    sigmas = basic(ctx, parts, "normal", 4)
    run = lambda g: advanced(ctx, noise(ctx, 1), g, select(ctx, "euler"), sigmas, parts["empty"])[0]["samples"]
    cfg = lambda p, n, c: run(call(cs.CFGGuider, ctx, model=model, positive=p, negative=n, cfg=c)[0])
    dual = lambda c1, c2, n, a, b, style: run(call(cs.DualCFGGuider, ctx, model=model, cond1=c1, cond2=c2,
                                                   negative=n, cfg_conds=a, cfg_cond2_negative=b, style=style)[0])
    basic_out = run(call(cs.BasicGuider, ctx, model=model, conditioning=pos)[0])
    assert torch.equal(basic_out, cfg(pos, neg, 1.0))  # cfg 1 is the positive alone
    assert not torch.allclose(basic_out, cfg(pos, neg, 6.0), atol=1e-2)
    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        """Equal but for float32 rounding, which grows with the latents' scale (~300 here), not element-wise."""
        return (a - b).abs().max().item() <= 1e-5 * b.abs().max().item()
    # regular: negative + b (cond2 - negative) + a (cond1 - cond2)
    assert close(dual(pos, neg, neg, 5.0, 3.0, "regular"), cfg(pos, neg, 5.0))
    assert close(dual(neg, pos, neg, 0.0, 4.0, "regular"), cfg(pos, neg, 4.0))
    # nested: negative + b (cond2 + a (cond1 - cond2) - negative)
    assert close(dual(pos, neg, third, 3.0, 1.0, "nested"), cfg(pos, neg, 3.0))
    assert close(dual(pos, pos, neg, 3.0, 2.5, "nested"), cfg(pos, neg, 2.5))
    assert not torch.allclose(dual(pos, neg, neg, 3.0, 2.0, "nested"), dual(pos, neg, neg, 3.0, 2.0, "regular"),
                              atol=1e-2)


# ---- sigma nodes --------------------------------------------------------------------------------------------


def test_schedules_from_bounds_match_the_models_schedules(ctx: Any, parts: dict) -> None:
    schedule = schedule_of(parts["model"].alphas_cumprod)
    lo, hi = float(schedule.sigmas32[0]), float(schedule.sigmas32[-1])
    karras = call(sg.KarrasScheduler, ctx, steps=7, sigma_max=hi, sigma_min=lo, rho=7.0)[0]
    assert torch.equal(karras, compute_sigmas(schedule, "karras", 7))
    exponential = call(sg.ExponentialScheduler, ctx, steps=7, sigma_max=hi, sigma_min=lo)[0]
    assert torch.equal(exponential, compute_sigmas(schedule, "exponential", 7))
    poly = call(sg.PolyexponentialScheduler, ctx, steps=7, sigma_max=hi, sigma_min=lo, rho=1.0)[0]
    assert torch.allclose(poly, exponential, rtol=1e-5) and poly[-1] == 0
    bent = call(sg.PolyexponentialScheduler, ctx, steps=7, sigma_max=hi, sigma_min=lo, rho=2.0)[0]
    assert bent[0] == poly[0] and bent[3] < poly[3]  # a squared ramp leaves the top sooner
    with pytest.raises(ValueError, match="ExponentialScheduler.sigma_min"):
        call(sg.ExponentialScheduler, ctx, steps=3, sigma_max=hi, sigma_min=0.0)


def test_sd_turbo_scheduler(ctx: Any, parts: dict) -> None:
    schedule = schedule_of(parts["model"].alphas_cumprod)
    at = lambda t: float(schedule.log_sigmas32[t].exp())  # ComfyUI's sigma(t): from the float32 log-sigmas
    one = call(sg.SDTurboScheduler, ctx, model=parts["model"], steps=1, denoise=1.0)[0]
    assert one.tolist() == [at(999), 0.0]
    two = call(sg.SDTurboScheduler, ctx, model=parts["model"], steps=2, denoise=0.5)[0]
    assert two.tolist() == [at(499), at(399), 0.0]


def test_sigma_operations(ctx: Any) -> None:
    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.0], dtype=torch.float64)
    high, low = call(sg.SplitSigmasDenoise, ctx, sigmas=sigmas, denoise=0.4)
    assert high.tolist() == [8.0, 4.0, 2.0, 1.0] and low.tolist() == [1.0, 0.5, 0.0]
    high, low = call(sg.SplitSigmasDenoise, ctx, sigmas=sigmas, denoise=0.0)
    assert high.tolist() == [] and low.tolist() == [0.0]
    flipped = call(sg.FlipSigmas, ctx, sigmas=sigmas)[0]
    assert flipped[1:].tolist() == [0.5, 1.0, 2.0, 4.0, 8.0] and math.isclose(float(flipped[0]), 1e-4, rel_tol=1e-6)
    assert sigmas[-1] == 0  # the input is left as it was
    first = call(sg.SetFirstSigma, ctx, sigmas=sigmas, sigma=20.1)[0]
    assert first[1:].tolist() == sigmas[1:].tolist() and first[0] == float(torch.tensor(20.1, dtype=torch.float32))
    assert sigmas[0] == 8.0
    with pytest.raises(ValueError, match="SetFirstSigma.sigmas"):
        call(sg.SetFirstSigma, ctx, sigmas=sigmas[:0], sigma=1.0)
    with pytest.raises(ValueError, match="SplitSigmas.sigmas"):
        call(sg.SplitSigmas, ctx, sigmas=[1.0, 0.0], step=1)


def test_sampling_percent_to_sigma(ctx: Any, parts: dict) -> None:
    model = parts["model"]
    schedule = schedule_of(model.alphas_cumprod)
    at = lambda p, actual=False: call(sg.SamplingPercentToSigma, ctx, model=model, sampling_percent=p,
                                      return_actual_sigma=actual)[0]
    assert at(0.0) == 999999999.9 and at(1.0) == 0.0
    assert at(0.0, True) == float(schedule.sigmas32[-1]) and at(1.0, True) == float(schedule.sigmas32[0])
    assert math.isclose(at(0.5), schedule.sigma(499.5), rel_tol=1e-6)
    assert at(0.25) > at(0.5) > at(0.75)


def test_bad_inputs_name_the_input(ctx: Any, parts: dict) -> None:
    with pytest.raises(ValueError, match="SamplerCustomAdvanced.sampler"):
        advanced(ctx, noise(ctx, 1), guider(ctx, parts), "euler", basic(ctx, parts, "normal", 2), parts["empty"])
    with pytest.raises(ValueError, match="SamplerCustomAdvanced.sigmas"):
        advanced(ctx, noise(ctx, 1), guider(ctx, parts), select(ctx, "euler"), torch.ones(2, 2), parts["empty"])
    with pytest.raises(ValueError, match="SamplerCustomAdvanced.latent_image"):
        advanced(ctx, noise(ctx, 1), guider(ctx, parts), select(ctx, "euler"), basic(ctx, parts, "normal", 2), {})


def test_dpmpp_2m_sde_solver_types(ctx: Any, parts: dict) -> None:
    """midpoint at the defaults is KSampler's dpmpp_2m_sde; heun weighs the previous estimate by the exponential
    integrator's exact weight, checked on a two-step run with a denoiser of constant estimates."""
    sigmas = basic(ctx, parts, "karras", 4)
    run = lambda s: advanced(ctx, noise(ctx, 8), guider(ctx, parts), s, sigmas, parts["empty"])[0]["samples"]
    node = lambda solver, eta=1.0: call(cs.SamplerDPMPP_2M_SDE, ctx, solver_type=solver, eta=eta, s_noise=1.0,
                                        noise_device="cpu")[0]
    assert torch.equal(run(node("midpoint")), run(select(ctx, "dpmpp_2m_sde")))
    assert not torch.allclose(run(node("heun")), run(node("midpoint")), atol=1e-4)
    from sdgraph.nodes.sd.k_multistep import sample_dpmpp_2m_sde

    estimates = iter([torch.full((1, 1), 1.0), torch.full((1, 1), 3.0)])
    s = [4.0, 2.0, 1.0]
    out = sample_dpmpp_2m_sde(lambda x, sigma: next(estimates), torch.zeros(1, 1), s, eta=0.0, solver_type="heun")
    x1 = 1.0 * (1 - s[1] / s[0])  # first step: first order
    h = math.log(s[1] / s[2])
    expected = x1 * s[2] / s[1] + 3.0 * (1 - s[2] / s[1]) + (3.0 - 1.0) * (1 - (1 - math.exp(-h)) / h)
    assert math.isclose(float(out), expected, rel_tol=1e-6)
    with pytest.raises(ValueError, match="solver_type"):
        sample_dpmpp_2m_sde(lambda x, sigma: x, torch.zeros(1, 1), s, solver_type="rk4")


def test_dual_cfg_combines_three_predictions(ctx: Any, parts: dict) -> None:
    """One Euler step to sigma 0 returns the guided estimate itself: the dual guider's is ComfyUI's combination
    of the three conditionings' own estimates."""
    model, c1, c2, neg = parts["model"], parts["positive"], parts["third"], parts["negative"]
    sigmas = basic(ctx, parts, "normal", 4)[[0, -1]]
    run = lambda g: advanced(ctx, noise(ctx, 3), g, select(ctx, "euler"), sigmas, parts["empty"])[0]["samples"]
    d1, d2, dn = (run(call(cs.BasicGuider, ctx, model=model, conditioning=c)[0]) for c in (c1, c2, neg))
    dual = lambda style: run(call(cs.DualCFGGuider, ctx, model=model, cond1=c1, cond2=c2, negative=neg,
                                  cfg_conds=2.5, cfg_cond2_negative=4.0, style=style)[0])
    close = dict(atol=2e-4, rtol=1e-4)
    assert torch.allclose(dual("regular"), dn + (d2 - dn) * 4.0 + (d1 - d2) * 2.5, **close)
    assert torch.allclose(dual("nested"), dn + (d2 + (d1 - d2) * 2.5 - dn) * 4.0, **close)
