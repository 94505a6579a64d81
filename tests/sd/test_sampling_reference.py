"""KSampler against diffusers: the same tiny random UNet (fp32, CPU), seed, steps and cfg through KSampler's
sampling path and through a hand-written diffusers denoising loop give the same latents (max abs diff <= 1e-3),
compared in the model's space (KSampler's unscaled LATENT scaled back in).

Each sampler is paired with the diffusers scheduler implementing the same algorithm and configured for the same
timesteps (the schedules are compared in test_sampling_schedules.py):

- "ddim_uniform" = diffusers' "leading" spacing with steps_offset 1 (SD 1.5's own scheduler config), whose
  initial noise is sqrt(sigma_0^2 + 1), like ours when sampling starts at the top of the schedule;
- "sgm_uniform" with 9 steps = diffusers' "linspace" spacing for the multistep solvers (timesteps 999, 888, ...);
- Euler takes our sigmas directly (`set_timesteps(sigmas=...)`), so several schedules are checked with it.

Run with `-s` to see the table of maximum absolute differences.
"""
from __future__ import annotations

import functools
from typing import Any

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from sampling_support import BETAS, TinyModel, conditioning, diffusers_loop, empty_latent, tiny_unet  # noqa: E402
from sdgraph.nodes.sd import sampling  # noqa: E402
from sdgraph.nodes.sd.denoiser import SDDenoiser  # noqa: E402
from sdgraph.nodes.sd.k_multistep import sample_dpmpp_3m_sde  # noqa: E402
from sdgraph.nodes.sd.sampling import Plan, plan_sigmas, sample_latent  # noqa: E402
from sdgraph.nodes.sd.schedules import DiscreteSchedule  # noqa: E402

SEED, CFG, TOLERANCE = 42, 7.5, 1e-3
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
LEADING = dict(timestep_spacing="leading", steps_offset=1)
LINSPACE = dict(timestep_spacing="linspace")
DPMPP = dict(LINSPACE, solver_order=2, solver_type="midpoint", final_sigmas_type="zero")

# (sampler, our scheduler, steps, diffusers scheduler class name, its config, how its timesteps are set)
CASES: list[tuple[str, str, int, str, dict[str, Any], str]] = [
    ("euler", "normal", 10, "EulerDiscreteScheduler", dict(timestep_spacing="leading"), "sigmas"),
    ("euler", "karras", 10, "EulerDiscreteScheduler", dict(timestep_spacing="leading"), "sigmas"),
    ("euler", "exponential", 10, "EulerDiscreteScheduler", dict(timestep_spacing="leading"), "sigmas"),
    ("euler", "beta", 10, "EulerDiscreteScheduler", dict(timestep_spacing="leading"), "sigmas"),
    ("euler_ancestral", "ddim_uniform", 10, "EulerAncestralDiscreteScheduler", LEADING, "steps"),
    ("heun", "ddim_uniform", 10, "HeunDiscreteScheduler", LEADING, "steps"),
    ("dpm_2", "ddim_uniform", 10, "KDPM2DiscreteScheduler", LEADING, "steps"),
    ("dpm_2_ancestral", "ddim_uniform", 10, "KDPM2AncestralDiscreteScheduler", LEADING, "steps"),
    ("lms", "ddim_uniform", 10, "LMSDiscreteScheduler", LEADING, "steps"),
    ("dpmpp_2m", "sgm_uniform", 9, "DPMSolverMultistepScheduler", dict(DPMPP, algorithm_type="dpmsolver++"),
     "steps"),
    ("dpmpp_2m_sde", "sgm_uniform", 9, "DPMSolverMultistepScheduler",
     dict(DPMPP, algorithm_type="sde-dpmsolver++"), "steps"),
    ("ddim", "ddim_uniform", 10, "DDIMScheduler", dict(LEADING, set_alpha_to_one=True, clip_sample=False), "steps"),
    ("ddpm", "ddim_uniform", 10, "DDPMScheduler", dict(LEADING, clip_sample=False, variance_type="fixed_small"),
     "steps"),
    ("uni_pc_bh2", "sgm_uniform", 9, "UniPCMultistepScheduler",
     dict(LINSPACE, solver_type="bh2", solver_order=3, final_sigmas_type="zero"), "steps"),
    ("lcm", "sgm_uniform", 3, "LCMScheduler", dict(LINSPACE), "timesteps"),
]
V_PREDICTION = {("euler", "normal"), ("heun", "ddim_uniform"), ("dpmpp_2m", "sgm_uniform"), ("ddim", "ddim_uniform"),
                ("uni_pc_bh2", "sgm_uniform"), ("lcm", "sgm_uniform")}

RESULTS: dict[str, float] = {}


@pytest.fixture(scope="module")
def unet() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads; on a shared CPU they only spin
    yield tiny_unet()
    torch.set_num_threads(threads)


def _compare(unet: torch.nn.Module, sampler: str, plan: Plan, scheduler: Any, set_timesteps: dict[str, Any],
             prediction: str, scale_ref: float = 1.0) -> float:
    model = TinyModel(unet, prediction_type=prediction)
    positive, negative = conditioning(1), conditioning(2)
    # diffusers' conventions, not ComfyUI's (those are pinned in test_sampling.py): one noise stream that goes on
    # from the initial draw (per-item noise, with one item), sqrt(1 + sigma_0^2) at step 0 of any schedule, and
    # the fractional timestep of a sigma between training levels
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SDDenoiser, "timestep", lambda self, sigma: self.model_sampling.schedule.timestep(sigma))
        patch.setattr(sampling, "max_denoise", lambda sigma_0, sigma_max: True)
        ours = sample_latent(model, positive, negative, empty_latent(), seed=SEED, cfg=CFG, sampler_name=sampler,
                             plan=plan, per_item_noise=True)["samples"]
    ours = model.latent_format.process_in(ours)  # diffusers' loop ends in the model's (scaled) space
    ref = diffusers_loop(unet, scheduler, positive[0][0], negative[0][0], CFG, SEED, tuple(ours.shape),
                         set_timesteps)
    assert torch.isfinite(ours).all() and ours.abs().max() > 1.0  # a real trajectory, not a trivial one
    return float((ours - ref * scale_ref).abs().max())


def _record(key: str, diff: float, tolerance: float = TOLERANCE) -> None:
    RESULTS[key] = diff
    assert diff <= tolerance, f"{key}: max abs diff {diff:.2e} > {tolerance}"


def _case_id(case: tuple) -> str:
    return f"{case[0]}-{case[1]}"


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_ksampler_matches_diffusers(unet: torch.nn.Module, case: tuple, prediction: str) -> None:
    sampler, scheduler_name, steps, cls_name, config, how = case
    if prediction == "v_prediction" and (sampler, scheduler_name) not in V_PREDICTION:
        pytest.skip("v-prediction is checked on a subset")
    plan = plan_sigmas(TinyModel(unet), scheduler_name, steps)
    scheduler = getattr(diffusers, cls_name)(**BETAS, prediction_type=prediction, **config)
    if how == "sigmas":
        set_timesteps = {"sigmas": plan.sigmas.tolist()}
    elif how == "timesteps":
        schedule = DiscreteSchedule(TinyModel(unet).alphas_cumprod)
        set_timesteps = {"timesteps": [round(schedule.timestep(s)) for s in plan.sigmas[:-1].tolist()]}
    else:
        set_timesteps = {"num_inference_steps": steps}
    # our UniPC, as ComfyUI's, stops at sigma 0.001 (x there, ~0.001 * eps from diffusers' clean estimate)
    tolerance = 3 * TOLERANCE if sampler.startswith("uni_pc") else TOLERANCE
    _record(f"{prediction:12s} {sampler:16s} {scheduler_name:12s} vs {cls_name}",
            _compare(unet, sampler, plan, scheduler, set_timesteps, prediction), tolerance)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_uni_pc_corrector_matches_diffusers_to_sigma_min(unet: torch.nn.Module, variant: str) -> None:
    """UniPC's bh1 variant (ComfyUI's "uni_pc") against diffusers, ending at sigma_min: diffusers' bh1 gives NaN
    on a final step to sigma 0. Its final latents are in the VP parametrisation, so they are divided by
    sqrt(alpha_bar_0) to compare."""
    model = TinyModel(unet)
    plan = plan_sigmas(model, "sgm_uniform", 9)
    sigmas = plan.sigmas.clone()
    alpha_bar_0 = float(model.alphas_cumprod[0])
    sigmas[-1] = ((1 - alpha_bar_0) / alpha_bar_0) ** 0.5
    scheduler = diffusers.UniPCMultistepScheduler(**BETAS, **LINSPACE, solver_type=variant, solver_order=3,
                                                  final_sigmas_type="sigma_min")
    name = "uni_pc" if variant == "bh1" else "uni_pc_bh2"
    diff = _compare(unet, name, Plan(sigmas, True), scheduler, {"num_inference_steps": 9}, "epsilon",
                    scale_ref=alpha_bar_0 ** -0.5)
    _record(f"{'epsilon':12s} {name:16s} {'sgm_uniform':12s} vs UniPCMultistepScheduler (to sigma_min)", diff)


def test_dpmpp_3m_update_matches_diffusers_third_order(unet: torch.nn.Module, monkeypatch: Any) -> None:
    """dpmpp_3m_sde with eta = 0 is DPM-Solver++(3M); diffusers lowers the order near the end only below 15
    steps, so 27 steps (timesteps 999 - 37 k) compare the third-order update itself."""
    deterministic = functools.partial(sample_dpmpp_3m_sde, eta=0.0)
    original = sampling.get_sampler
    monkeypatch.setattr(sampling, "get_sampler", lambda n: deterministic if n == "dpmpp_3m" else original(n))
    plan = plan_sigmas(TinyModel(unet), "sgm_uniform", 27)
    scheduler = diffusers.DPMSolverMultistepScheduler(**BETAS, **LINSPACE, algorithm_type="dpmsolver++",
                                                      solver_order=3, solver_type="heun", final_sigmas_type="zero")
    diff = _compare(unet, "dpmpp_3m", plan, scheduler, {"num_inference_steps": 27}, "epsilon")
    _record(f"{'epsilon':12s} {'dpmpp_3m (eta 0)':16s} {'sgm_uniform':12s} vs DPMSolverMultistepScheduler o3", diff)


@pytest.fixture(scope="module", autouse=True)
def difference_table() -> Any:
    """Prints the max abs differences gathered by this module's tests once they ran (visible with -s)."""
    yield
    if RESULTS:
        print("\nmax abs diff, KSampler vs diffusers (tiny UNet, fp32, CPU)")
        for key, diff in RESULTS.items():
            print(f"  {key:80s} {diff:.2e}")
