"""Schedules hold ComfyUI's float32 sigmas bit for bit (the SDE samplers' Brownian tree is queried at them).

The expected values below were printed by ComfyUI a125cd8 (`comfy.samplers.calculate_sigmas` on SD1.5's
ModelSamplingDiscrete, 4 steps; linear_quadratic's from its `linear_quadratic_schedule` on the same sigma_max), as
float32 bit patterns.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sdgraph.nodes.sd.model_objects import sd_alphas_cumprod  # noqa: E402
from sdgraph.nodes.sd.schedules import compute_sigmas, schedule_of  # noqa: E402

COMFY_4_STEPS = {
    "normal": (0x4169d591, 0x403ac58b, 0x3f6eaf03, 0x3ceeeff8, 0x0),
    "karras": (0x4169d594, 0x404aca6c, 0x3ee4d283, 0x3ceef001, 0x0),
    "exponential": (0x4169d591, 0x3feb85e5, 0x3e6d3960, 0x3ceeeff8, 0x0),
    "sgm_uniform": (0x4169d591, 0x4082c12d, 0x3fcecb56, 0x3f31f552, 0x0),
    "simple": (0x4169d592, 0x40829d87, 0x3fce730e, 0x3f3175e0, 0x0),
    "ddim_uniform": (0x4083bbfa, 0x3fcfd524, 0x3f32ca38, 0x3d29394d, 0x0),
    "beta": (0x4169d592, 0x40b5f88f, 0x3fcf23c3, 0x3f03f0a4, 0x0),
    "kl_optimal": (0x4169d589, 0x3fcc6ca8, 0x3f12aa81, 0x3ceeeff7, 0x0),
    "linear_quadratic": (0x4169d592, 0x4166e94d, 0x4163fd08, 0x412987a4, 0x0),
}
# linear_quadratic splits the steps in a linear and a quadratic half: an odd count and a single step too
COMFY_LINEAR_QUADRATIC = {
    1: (0x4169d592, 0x0),
    7: (0x4169d592, 0x4167e2b9, 0x4165efe1, 0x4163fd08, 0x41544715, 0x41290aed, 0x40c49122, 0x0),
}


def _bits(sigmas: torch.Tensor) -> tuple[int, ...]:
    import struct

    return tuple(struct.unpack("<I", struct.pack("<f", v))[0] for v in sigmas.tolist())


@pytest.mark.parametrize("name", sorted(COMFY_4_STEPS))
def test_four_step_schedules_are_comfyuis_float32_bits(name: str) -> None:
    assert _bits(compute_sigmas(schedule_of(sd_alphas_cumprod()), name, 4)) == COMFY_4_STEPS[name]


@pytest.mark.parametrize("steps", sorted(COMFY_LINEAR_QUADRATIC))
def test_linear_quadratic_is_comfyuis_for_odd_and_single_steps(steps: int) -> None:
    sigmas = compute_sigmas(schedule_of(sd_alphas_cumprod()), "linear_quadratic", steps)
    assert _bits(sigmas) == COMFY_LINEAR_QUADRATIC[steps]


def test_the_unet_timestep_is_the_float32_nearest() -> None:
    schedule = schedule_of(sd_alphas_cumprod())
    # halfway in log-sigma between timesteps 500 and 501: float64 and float32 comparisons could disagree
    log_mid = (schedule.log_sigmas32[500].double() + schedule.log_sigmas32[501].double()) / 2
    for nudge in (-1e-6, 1e-6):
        sigma = float(torch.tensor(float(log_mid) + nudge, dtype=torch.float32).exp())
        log32 = torch.tensor(sigma, dtype=torch.float32).log()
        expected = int((log32 - schedule.log_sigmas32).abs().argmin())
        assert schedule.nearest_timestep(sigma) == expected
    assert schedule.nearest_timestep(schedule.sigma_max) == 999 and schedule.nearest_timestep(1e-9) == 0
