"""The SAMPLER nodes with options and AddNoise: ComfyUI's numbers on the toy denoiser, the node at its defaults
being the KSampler name it stands for, the options reaching the sampler, and what LCM upscale and AddNoise do.

`data/custom_sampling.npz` holds the outputs of ComfyUI a125cd8's own nodes for the cases of
`custom_sampler_cases.py` (tools/comfy_reference/custom_sampling_refs.py), run on the toy problem of
`toy_denoiser.py` as `test_sampler_toy_reference.py` runs the KSampler names; sdgraph runs them through
`sampling.call_sampler`, the noise and option handling of KSampler and SamplerCustomAdvanced.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from cpu_references import References
from custom_sampler_cases import MODEL, SAMPLER_NODES
from toy_denoiser import SEED, SHAPE, ToyGuidedDenoiser, toy_denoise, toy_sigmas, toy_start
from sdgraph.nodes.sd import custom_samplers as csr
from sdgraph.nodes.sd import custom_sampling as cs
from sdgraph.nodes.sd.custom_sampling import SamplerChoice
from sdgraph.nodes.sd.k_cfgpp import CFG_PP_SAMPLERS
from sdgraph.nodes.sd.k_samplers import sample_lcm
from sdgraph.nodes.sd.k_upscale import sample_lcm_upscale, upscale_ratios
from sdgraph.nodes.sd.model_objects import LatentFormat, sd_alphas_cumprod
from sdgraph.nodes.sd.noise import SeededNoise, batch_noise
from sdgraph.nodes.sd.sampling import call_sampler, model_sampler_options

HERE = Path(__file__).parent
REFERENCE = References(HERE / "data" / "custom_sampling.npz")
KSAMPLER_REFERENCE = np.load(HERE / "data" / "toy_samplers.npz")
SD1 = SimpleNamespace(alphas_cumprod=sd_alphas_cumprod(), latent_format=LatentFormat())
NODES = {cls.__name__: cls for cls in csr.NODES}


def node(name: str, **inputs: Any) -> Any:
    return NODES[name]().run(**{k: SD1 if v == MODEL else v for k, v in inputs.items()})[0]


def toy(choice: SamplerChoice, schedule: str = "uneven", seed: int = SEED) -> torch.Tensor:
    """The choice sampled on the toy problem as SamplerCustomAdvanced samples it (the model's own options
    first, then the node's)."""
    sigmas = toy_sigmas(schedule)
    x = toy_start(sigmas)
    denoise = ToyGuidedDenoiser() if choice.name in CFG_PP_SAMPLERS else toy_denoise
    options = {**model_sampler_options(choice.name, SD1), **choice.options}
    with torch.no_grad():
        return call_sampler(choice.name, denoise, x, sigmas, seed=seed, seeded=SeededNoise(seed, x.shape[0]),
                            options=options)


CASES = [f"{schedule}/{key}" for schedule in ("karras", "uneven") for key in SAMPLER_NODES]


@pytest.mark.parametrize("case", CASES)
def test_sampler_nodes_match_comfyui_on_the_toy_denoiser(case: str) -> None:
    schedule, key = case.split("/")
    name, inputs = SAMPLER_NODES[key]
    out = toy(node(name, **inputs), schedule)
    expected = torch.from_numpy(REFERENCE.closest(f"sampler/{case}", out.numpy()))
    assert out.shape == expected.shape, (case, out.shape, expected.shape)
    error = (out - expected).abs().max().item()
    assert error < 1e-4, f"{case}: max abs diff {error:.3g}"


def test_the_options_change_what_comfyui_computes() -> None:
    """The cases are not the samplers' defaults in disguise: each differs from the KSampler name's output (on
    the toy problem, as sdgraph samples it; `test_sampler_toy_reference.py` holds those to ComfyUI's)."""
    for key, name in (("dpmpp_3m_sde_options", "dpmpp_3m_sde"), ("dpm_adaptive_eta", "dpm_adaptive"),
                      ("dpm_adaptive_order2", "dpm_adaptive"), ("er_sde_stage2", "er_sde"),
                      ("er_sde_reverse", "er_sde"), ("er_sde_ode", "er_sde"), ("sa_solver_low_orders", "sa_solver"),
                      ("sa_solver_simple_2", "sa_solver"), ("sa_solver_ode", "sa_solver"),
                      ("euler_a_cfgpp_eta", "euler_ancestral_cfg_pp"), ("euler_cfgpp_alternative", "euler_cfg_pp")):
        diff = np.abs(REFERENCE[f"sampler/uneven/{key}"] - toy(SamplerChoice(name)).numpy()).max()
        assert diff > 1e-3, (key, diff)
    pece = np.abs(REFERENCE["sampler/uneven/sa_solver_pece_simple"] - KSAMPLER_REFERENCE["uneven/sa_solver_pece"])
    assert pece.max() > 1e-4  # the simplified weights alone (order 2 steps only)


DEFAULTS = [
    (("SamplerEulerAncestralCFGPP", {"eta": 1.0, "s_noise": 1.0}), "euler_ancestral_cfg_pp"),
    (("SamplerDPMPP_3M_SDE", {"eta": 1.0, "s_noise": 1.0, "noise_device": "gpu"}), "dpmpp_3m_sde_gpu"),
    (("SamplerDPMPP_3M_SDE", {"eta": 1.0, "s_noise": 1.0, "noise_device": "cpu"}), "dpmpp_3m_sde"),
    (("SamplerDPMAdaptative", {"order": 3, "rtol": 0.05, "atol": 0.0078, "h_init": 0.05, "pcoeff": 0.0, "icoeff": 1.0,
                               "dcoeff": 0.0, "accept_safety": 0.81, "eta": 0.0, "s_noise": 1.0}), "dpm_adaptive"),
    (("SamplerER_SDE", {"solver_type": "ER-SDE", "max_stage": 3, "eta": 1.0, "s_noise": 1.0}), "er_sde"),
    (("SamplerSASolver", {"model": MODEL, "eta": 1.0, "sde_start_percent": 0.2, "sde_end_percent": 0.8,
                          "s_noise": 1.0, "predictor_order": 3, "corrector_order": 4, "use_pece": False,
                          "simple_order_2": False}), "sa_solver"),
    (("SamplerSASolver", {"model": MODEL, "eta": 1.0, "sde_start_percent": 0.2, "sde_end_percent": 0.8,
                          "s_noise": 1.0, "predictor_order": 3, "corrector_order": 4, "use_pece": True,
                          "simple_order_2": False}), "sa_solver_pece"),
    (("SamplerEulerCFGpp", {"version": "regular"}), "euler_cfg_pp"),
]


@pytest.mark.parametrize("spec,name", DEFAULTS, ids=[name for _, name in DEFAULTS])
def test_a_node_at_its_defaults_is_the_ksampler_name(spec: tuple[str, dict], name: str) -> None:
    for schedule in ("karras", "uneven"):
        assert torch.equal(toy(node(spec[0], **spec[1]), schedule), toy(SamplerChoice(name), schedule))


def test_noise_options_reach_the_samplers() -> None:
    """s_noise 0 and eta 0 make the stochastic samplers deterministic (the seed stops mattering) and differ
    from their noisy runs; the ODE variants also agree with each other where they should."""
    def quiet(choice: SamplerChoice) -> torch.Tensor:
        first = toy(choice, seed=1)
        assert torch.equal(first, toy(choice, seed=2)), choice
        return first

    loud = toy(node("SamplerEulerAncestralCFGPP", eta=1.0, s_noise=1.0), seed=1)
    assert not torch.allclose(quiet(node("SamplerEulerAncestralCFGPP", eta=1.0, s_noise=0.0)), loud, atol=1e-3)
    assert torch.allclose(quiet(node("SamplerEulerAncestralCFGPP", eta=0.0, s_noise=1.0)),
                          toy(SamplerChoice("euler_cfg_pp")), atol=1e-6)
    quiet(node("SamplerDPMPP_3M_SDE", eta=0.0, s_noise=1.0, noise_device="cpu"))
    quiet(node("SamplerDPMPP_3M_SDE", eta=0.7, s_noise=0.0, noise_device="cpu"))
    ode = quiet(node("SamplerER_SDE", solver_type="ODE", max_stage=3, eta=1.0, s_noise=1.0))
    assert torch.equal(quiet(node("SamplerER_SDE", solver_type="Reverse-time SDE", max_stage=3, eta=0.0,
                                  s_noise=1.0)), ode)
    assert not torch.allclose(ode, toy(SamplerChoice("er_sde"), seed=1), atol=1e-3)
    sa = dict(model=MODEL, sde_start_percent=0.2, sde_end_percent=0.8, s_noise=1.0, predictor_order=3,
              corrector_order=4, use_pece=False, simple_order_2=False)
    quiet(node("SamplerSASolver", **{**sa, "eta": 0.0}))
    quiet(node("SamplerSASolver", **{**sa, "eta": 1.0, "s_noise": 0.0}))
    adaptive = dict(order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0,
                    accept_safety=0.81)
    noisy = toy(node("SamplerDPMAdaptative", **adaptive, eta=0.5, s_noise=1.0), seed=1)
    assert not torch.equal(noisy, toy(node("SamplerDPMAdaptative", **adaptive, eta=0.5, s_noise=1.0), seed=2))


def test_sa_solver_interval_comes_from_the_models_schedule() -> None:
    choice = node("SamplerSASolver", model=MODEL, eta=0.5, sde_start_percent=0.0, sde_end_percent=1.0, s_noise=1.0,
                  predictor_order=2, corrector_order=1, use_pece=True, simple_order_2=True)
    assert choice.name == "sa_solver" and choice.options["tau_interval"] == (999999999.9, 0.0)
    assert choice.options["pece"] is True and choice.options["simple_order_2"] is True
    middle = node("SamplerSASolver", model=MODEL, eta=1.0, sde_start_percent=0.2, sde_end_percent=0.8, s_noise=1.0,
                  predictor_order=3, corrector_order=4, use_pece=False, simple_order_2=False)
    assert middle.options["tau_interval"] == model_sampler_options("sa_solver", SD1)["tau_interval"]


def test_bad_options_name_the_input() -> None:
    with pytest.raises(ValueError, match="SamplerDPMAdaptative.order"):
        node("SamplerDPMAdaptative", order=4, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0,
             dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0)
    with pytest.raises(ValueError, match="SamplerSASolver.predictor_order"):
        node("SamplerSASolver", model=MODEL, eta=1.0, sde_start_percent=0.2, sde_end_percent=0.8, s_noise=1.0,
             predictor_order=0, corrector_order=4, use_pece=False, simple_order_2=False)


# ---- LCM upscale ---------------------------------------------------------------------------------------------


class ShapeSpy:
    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.sizes.append(tuple(x.shape[-2:]))
        return toy_denoise(x, sigma)


@pytest.mark.parametrize("scale_steps,expected", [(3, [6, 8, 10, 12, 12]), (1, [6, 12, 12, 12, 12]),
                                                  (-1, [6, 8, 10, 12, 12])])
def test_lcm_upscale_grows_the_latent_step_by_step(scale_steps: int, expected: list[int]) -> None:
    """A 6x6 latent, scale_ratio 2 over scale_steps steps: 6 -> 8 -> 10 -> 12 (thirds of the growth), or to 12
    at once; 5 steps by default grow over 6 // 2 + 1 - 1 = 3 of them."""
    choice = node("SamplerLCMUpscale", scale_ratio=2.0, scale_steps=scale_steps, upscale_method="nearest-exact")
    sigmas = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.5, 0.0])
    spy = ShapeSpy()
    x = torch.randn((1, 4, 6, 6), generator=torch.Generator().manual_seed(0)) * 10.0
    out = call_sampler(choice.name, spy, x, sigmas, seed=0, seeded=SeededNoise(0, 1), options=choice.options)
    assert spy.sizes == [(n, n) for n in expected] and out.shape == (1, 4, 12, 12)
    assert upscale_ratios(6, 2.0, None) == pytest.approx([4 / 3, 5 / 3, 2.0], rel=1e-12)


def test_lcm_upscale_at_scale_1_is_lcm() -> None:
    """Same size and the LCM sampler's own noise: exactly KSampler's lcm (clean estimate, re-noised to the next
    sigma with fresh noise)."""
    sigmas = toy_sigmas("uneven")
    x = toy_start(sigmas)
    expected = sample_lcm(toy_denoise, x, sigmas, noise_sampler=SeededNoise(SEED, SHAPE[0]).sampler(x))
    lcm_noise = SeededNoise(SEED, SHAPE[0])
    out = sample_lcm_upscale(toy_denoise, x, sigmas, noise_like=lambda like: lcm_noise.draw(like.shape[1:]),
                             total_upscale=1.0, upscale_method="nearest-exact")
    assert torch.equal(out, expected)


def test_lcm_upscale_noise_goes_on_from_the_initial_noise() -> None:
    """ComfyUI's randn_like draws from the generator its initial noise came from: the first re-noising draw is
    the next batch-sized draw of that seed's stream."""
    first_draws: list[torch.Tensor] = []

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        first_draws.append(x.clone())
        return torch.zeros_like(x)

    choice = node("SamplerLCMUpscale", scale_ratio=1.0, scale_steps=-1, upscale_method="nearest-exact")
    x = torch.zeros(SHAPE)
    call_sampler(choice.name, denoise, x, torch.tensor([3.0, 2.0, 0.0]), seed=SEED, seeded=SeededNoise(SEED, 2),
                 options=choice.options)
    stream = torch.Generator().manual_seed(SEED)
    assert torch.equal(torch.randn(SHAPE, generator=stream), batch_noise(SEED, SHAPE))
    assert torch.equal(first_draws[1], torch.randn(SHAPE, generator=stream) * 2.0)


# ---- AddNoise ------------------------------------------------------------------------------------------------


def add_noise(noise: Any, sigmas: torch.Tensor, latent: dict) -> dict:
    return cs.AddNoise().run(model=SD1, noise=noise, sigmas=sigmas, latent_image=latent)[0]


def test_add_noise_adds_the_noise_times_the_schedules_span_in_the_models_space() -> None:
    latent = {"samples": torch.randn((2, 4, 5, 5), generator=torch.Generator().manual_seed(3)), "batch_index": [4, 1]}
    sigmas = torch.tensor([7.5, 3.0, 1.25], dtype=torch.float64)
    out = add_noise(cs.NoiseSource(21), sigmas, latent)
    drawn = batch_noise(21, (2, 4, 5, 5), [4, 1])  # the batch_index items of the seed's batch
    expected = (latent["samples"] * 0.18215 + drawn * 6.25) / 0.18215  # SD's latent scale in and out
    assert torch.allclose(out["samples"], expected, rtol=1e-6, atol=1e-5) and out["batch_index"] == [4, 1]
    one = add_noise(cs.NoiseSource(21), sigmas[:1], {"samples": torch.zeros((2, 4, 5, 5))})
    empty_out = batch_noise(21, (2, 4, 5, 5)) * 7.5 / 0.18215  # an empty latent is not scaled in: it stays 0
    assert torch.allclose(one["samples"], empty_out, rtol=1e-6, atol=1e-5)
    assert add_noise(cs.NoiseSource(21), sigmas[:0], latent) is latent
    quiet = add_noise(cs.NoiseSource(0, enabled=False), sigmas, latent)
    assert torch.allclose(quiet["samples"], latent["samples"], atol=1e-6)
    with pytest.raises(ValueError, match="AddNoise.noise"):
        add_noise(21, sigmas, latent)
    with pytest.raises(ValueError, match="AddNoise.latent_image"):
        add_noise(cs.NoiseSource(21), sigmas, {"noise": 1})


# ---- through SamplerCustomAdvanced on the tiny SD1 model ----------------------------------------------------

from sampling_support import TinyModel, conditioning, tiny_unet  # noqa: E402
from sdgraph.context import InterruptFlag, NodeContext, Services  # noqa: E402


@pytest.fixture(scope="module")
def model() -> TinyModel:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads; on a shared CPU they only spin
    yield TinyModel(tiny_unet())
    torch.set_num_threads(threads)


def advanced(model: TinyModel, sampler: SamplerChoice, latent: dict, seed: int = 5) -> tuple[dict, dict]:
    ctx = NodeContext(node_id="3", prompt_id="p", services=Services(settings={}), interrupt=InterruptFlag(),
                      on_progress=lambda *a: None)
    guider = cs.CFGGuide(model, conditioning(1), conditioning(2), 1.5)
    sigmas = torch.tensor([14.614642, 3.5, 0.9, 0.0], dtype=torch.float64)
    node_ = cs.SamplerCustomAdvanced()
    node_.ctx = ctx
    return node_.run(noise=cs.NoiseSource(seed), guider=guider, sampler=sampler, sigmas=sigmas, latent_image=latent)


def test_lcm_upscale_through_sampler_custom_advanced(model: TinyModel) -> None:
    choice = node("SamplerLCMUpscale", scale_ratio=1.5, scale_steps=-1, upscale_method="bislerp")
    out, denoised = advanced(model, choice, {"samples": torch.zeros((1, 4, 8, 8))})
    assert out["samples"].shape == (1, 4, 12, 12) and torch.isfinite(out["samples"]).all()
    assert torch.equal(out["samples"], denoised["samples"])  # the last step lands on its estimate
    masked = {"samples": torch.zeros((1, 4, 8, 8)), "noise_mask": torch.ones((1, 8, 8))}
    with pytest.raises(ValueError, match="noise_mask"):
        advanced(model, choice, masked)


def test_sa_solver_node_through_sampler_custom_advanced(model: TinyModel) -> None:
    sa = dict(model=MODEL, sde_start_percent=0.2, sde_end_percent=0.8, s_noise=1.0, predictor_order=3,
              corrector_order=4, use_pece=False, simple_order_2=False)
    latent = {"samples": torch.zeros((1, 4, 8, 8))}
    default, _ = advanced(model, node("SamplerSASolver", **sa, eta=1.0), latent)
    assert torch.equal(default["samples"], advanced(model, SamplerChoice("sa_solver"), latent)[0]["samples"])
    ode, _ = advanced(model, node("SamplerSASolver", **sa, eta=0.0), latent)
    assert not torch.allclose(ode["samples"], default["samples"], atol=1e-4)
