"""Sigma schedules against the diffusers schedulers that define them, and the samplers on an analytic model:
Gaussian data, whose exact denoiser is known, so that ODE samplers must land on the exact solution and the
stochastic ones must produce the data distribution."""
from __future__ import annotations

import math

import pytest
import torch

from sdgraph.nodes.sd.k_samplers import SAMPLER_NAMES, get_sampler
from sdgraph.nodes.sd.model_objects import sd_alphas_cumprod
from sdgraph.nodes.sd.schedules import (SCHEDULER_NAMES, DiscreteSchedule, _beta_cdf, _bisect, compute_sigmas)

diffusers = pytest.importorskip("diffusers")
BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def schedule() -> DiscreteSchedule:
    return DiscreteSchedule(sd_alphas_cumprod())


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("steps", [1, 4, 25])
def test_schedules_descend_to_zero(schedule: DiscreteSchedule, name: str, steps: int) -> None:
    sigmas = compute_sigmas(schedule, name, steps)
    assert sigmas.dtype == torch.float64 and sigmas[-1] == 0
    assert 2 <= len(sigmas) <= steps + 1 and (name == "beta" or len(sigmas) == steps + 1)
    assert (sigmas[:-1] > sigmas[1:]).all()
    # within float32 rounding of the training range (schedules are computed in float32, as ComfyUI's)
    assert schedule.sigma_min * (1 - 1e-6) <= sigmas[-2] and sigmas[0] <= schedule.sigma_max * (1 + 1e-6)
    assert torch.equal(sigmas, sigmas.float().double()), "float32 values"
    if name == "ddim_uniform":  # diffusers' leading spacing: timesteps k * (1000 // steps) + 1
        assert sigmas[0] == pytest.approx(float(schedule.sigmas[(steps - 1) * (1000 // steps) + 1]))
    else:
        assert sigmas[0] == pytest.approx(schedule.sigma_max), "sampling starts at the top of the schedule"
    if name in ("normal", "karras", "exponential", "kl_optimal") and steps > 1:
        assert sigmas[-2] == pytest.approx(schedule.sigma_min), "and reaches its bottom before the final 0"


@pytest.mark.parametrize("name,option", [("normal", {}), ("karras", {"use_karras_sigmas": True}),
                                         ("exponential", {"use_exponential_sigmas": True})])
def test_sigma_space_schedules_match_diffusers_euler(schedule: DiscreteSchedule, name: str, option: dict) -> None:
    reference = diffusers.EulerDiscreteScheduler(**BETAS, timestep_spacing="linspace", **option)
    reference.set_timesteps(13)
    torch.testing.assert_close(compute_sigmas(schedule, name, 13).float(), reference.sigmas, rtol=1e-5, atol=1e-6)


def _sigmas_at(schedule: DiscreteSchedule, timesteps: torch.Tensor) -> torch.Tensor:
    return torch.tensor([float(schedule.sigmas[int(t)]) for t in timesteps] + [0.0], dtype=torch.float64)


def test_ddim_uniform_is_ddims_leading_spacing(schedule: DiscreteSchedule) -> None:
    reference = diffusers.DDIMScheduler(**BETAS, timestep_spacing="leading", steps_offset=1)
    reference.set_timesteps(20)
    expected = _sigmas_at(schedule, reference.timesteps).float().double()  # the float32 training sigmas
    assert torch.equal(compute_sigmas(schedule, "ddim_uniform", 20), expected)


def test_sgm_uniform_is_the_multistep_solvers_linspace(schedule: DiscreteSchedule) -> None:
    reference = diffusers.DPMSolverMultistepScheduler(**BETAS, timestep_spacing="linspace")
    reference.set_timesteps(9)
    torch.testing.assert_close(compute_sigmas(schedule, "sgm_uniform", 9), _sigmas_at(schedule, reference.timesteps))


def test_simple_takes_every_kth_training_sigma(schedule: DiscreteSchedule) -> None:
    sigmas = compute_sigmas(schedule, "simple", 8)
    assert torch.equal(sigmas[:-1], schedule.sigmas32[[999 - 125 * i for i in range(8)]].double())


def test_timestep_and_sigma_maps_invert(schedule: DiscreteSchedule) -> None:
    for t in (0.0, 1.5, 333.25, 998.9, 999.0):
        assert schedule.timestep(schedule.sigma(t)) == pytest.approx(t, abs=1e-6)
    assert schedule.sigma_to_percent(schedule.percent_to_sigma(0.3)) == pytest.approx(0.3)
    assert schedule.percent_to_sigma(0.0) == math.inf and schedule.percent_to_sigma(1.0) == 0.0


def test_beta_quantiles_without_scipy_agree_with_scipy() -> None:
    special = pytest.importorskip("scipy.special")
    for q in (0.05, 0.3, 0.5, 0.8, 0.99):
        ours = _bisect(lambda x: _beta_cdf(x, 0.6, 0.6), q)
        assert ours == pytest.approx(float(special.betaincinv(0.6, 0.6, q)), abs=1e-6)


# ---- samplers on Gaussian data ------------------------------------------------------------------------------

DATA_STD = 0.5


def gaussian_denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[x0 | x] for x0 ~ N(0, DATA_STD^2) and x = x0 + sigma * eps."""
    return x * (DATA_STD ** 2 / (DATA_STD ** 2 + sigma ** 2))


def _start(n: int, sigma_max: float) -> torch.Tensor:
    noise = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return noise * math.sqrt(DATA_STD ** 2 + sigma_max ** 2)  # x(sigma_max) drawn from its true marginal


ODE_SAMPLERS = ("euler", "heun", "dpm_2", "lms", "dpmpp_2m", "uni_pc", "uni_pc_bh2", "ddim")


@pytest.mark.parametrize("name", ODE_SAMPLERS)
def test_ode_samplers_follow_the_exact_flow(schedule: DiscreteSchedule, name: str) -> None:
    """The probability-flow ODE of Gaussian data scales x by sqrt((s^2 + sigma^2) / (s^2 + sigma_max^2))."""
    sigmas = compute_sigmas(schedule, "karras", 12)
    x = _start(64, float(sigmas[0]))
    exact = x * DATA_STD / math.sqrt(DATA_STD ** 2 + float(sigmas[0]) ** 2)
    error = (get_sampler(name)(gaussian_denoiser, x, sigmas) - exact).abs().max().item()
    euler = (get_sampler("euler")(gaussian_denoiser, x, sigmas) - exact).abs().max().item()
    assert error < 0.2 * exact.abs().max().item()
    if name not in ("euler", "ddim"):
        assert error < euler / 2  # higher order pays off


# LCM is left out: it assumes a consistency model, and with a plain denoiser it shrinks the variance by design;
# so are the CFG++ samplers, which need an unconditional prediction besides the denoiser's (see k_cfgpp). The
# other ODE samplers are here too: from the true marginal, the flow ends on the data distribution as well.
STOCHASTIC = tuple(n for n in SAMPLER_NAMES if n not in ODE_SAMPLERS and n != "lcm" and not n.endswith("_cfg_pp"))


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_samplers_produce_the_data_distribution(schedule: DiscreteSchedule, name: str) -> None:
    sigmas = compute_sigmas(schedule, "karras", 100)
    x = _start(20000, float(sigmas[0]))
    generator = torch.Generator().manual_seed(1)
    noise = lambda s, s_next: torch.randn(x.shape, generator=generator, dtype=x.dtype)  # noqa: E731
    out = get_sampler(name)(gaussian_denoiser, x, sigmas, noise_sampler=noise)
    assert out.std().item() == pytest.approx(DATA_STD, rel=0.05)
    assert abs(out.mean().item()) < 0.02
