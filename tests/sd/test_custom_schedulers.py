"""The schedulers and sigma operations added to the custom-sampling set: ComfyUI's sigmas to the bit, and what
each schedule means, checked against its formula or its published table.

`data/custom_sampling.npz` holds ComfyUI a125cd8's outputs for the cases of `custom_sampler_cases.py`
(tools/comfy_reference/custom_sampling_refs.py): its own scheduler nodes, ExtendIntermediateSigmas on
KarrasScheduler's sigmas, and comfy.utils.bislerp.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from cpu_references import References
from custom_sampler_cases import (BISLERP_CASES, BISLERP_SEED, EXTEND_CASES, EXTEND_INPUT, MODEL,
                                  SCHEDULER_NODES)
from sdgraph.nodes.sd import custom_schedulers as cs
from sdgraph.nodes.sd import custom_sigmas as sg
from sdgraph.nodes.sd.bislerp import bislerp
from sdgraph.nodes.sd.model_objects import sd_alphas_cumprod
from sdgraph.nodes.sd.schedules import compute_sigmas, schedule_of

REFERENCE = References(Path(__file__).parent / "data" / "custom_sampling.npz")
SD1 = SimpleNamespace(alphas_cumprod=sd_alphas_cumprod())
NODES = {cls.__name__: cls for cls in [*cs.NODES, *sg.NODES]}
TABLES = json.loads(cs.TABLES.read_text())


def run(name: str, **inputs: Any) -> Any:
    node = NODES[name]()
    return node.run(**{k: SD1 if v == MODEL else v for k, v in inputs.items()})


def bits(values: torch.Tensor) -> np.ndarray:
    return values.to(torch.float32).numpy().view(np.uint32)


# ---- ComfyUI's numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(SCHEDULER_NODES))
def test_schedulers_are_comfyuis_float32_bits(case: str) -> None:
    name, inputs = SCHEDULER_NODES[case]
    (sigmas,) = run(name, **inputs)
    expected = REFERENCE.closest(f"schedule/{case}", sigmas.numpy())
    assert sigmas.dtype == torch.float64 and sigmas.shape == expected.shape, case
    assert np.array_equal(bits(sigmas), expected.view(np.uint32)), (case, sigmas.tolist(), expected.tolist())


@pytest.mark.parametrize("case", sorted(EXTEND_CASES))
def test_extend_intermediate_sigmas_is_comfyuis(case: str) -> None:
    (sigmas,) = run(EXTEND_INPUT[0], **EXTEND_INPUT[1])
    (out,) = run("ExtendIntermediateSigmas", sigmas=sigmas, **EXTEND_CASES[case])
    expected = REFERENCE.closest(f"extend/{case}", out.numpy())
    assert out.shape == expected.shape and np.array_equal(bits(out), expected.view(np.uint32)), case


@pytest.mark.parametrize("case", sorted(BISLERP_CASES))
def test_bislerp_is_comfyuis(case: str) -> None:
    generator = torch.Generator().manual_seed(BISLERP_SEED)
    for key, ((h, w), (height, width)) in BISLERP_CASES.items():  # drawn in the reference's order
        samples = torch.randn((2, 4, h, w), generator=generator)
        if key == case:
            break
    out = bislerp(samples, width, height)
    expected = torch.from_numpy(REFERENCE.closest(f"bislerp/{case}", out.numpy()))
    assert out.shape == expected.shape and (out - expected).abs().max() <= 1e-6


# ---- what the schedules mean ---------------------------------------------------------------------------------


def test_vp_schedule_is_the_vp_sdes_sigma() -> None:
    (sigmas,) = run("VPScheduler", steps=6, beta_d=19.9, beta_min=0.1, eps_s=0.001)
    t = np.linspace(1.0, 0.001, 6)
    expected = np.sqrt(np.expm1(19.9 * t ** 2 / 2 + 0.1 * t))  # sigma(t) of the VP SDE, in float64
    assert len(sigmas) == 7 and sigmas[-1] == 0
    assert np.allclose(sigmas[:-1].numpy(), expected, rtol=1e-6)


def test_laplace_schedule_clusters_around_e_mu_and_has_no_final_zero() -> None:
    (sigmas,) = run("LaplaceScheduler", steps=9, sigma_max=10.0, sigma_min=0.05, mu=0.7, beta=1.3)
    assert len(sigmas) == 9  # ComfyUI's: no 0 appended, it ends at sigma_min
    assert sigmas[0] == pytest.approx(10.0, rel=1e-6) and sigmas[-1] == pytest.approx(0.05, rel=1e-6)
    assert sigmas[4] == pytest.approx(math.exp(0.7), rel=1e-5)  # the median fraction 0.5 sits at e^mu
    # the Laplace quantiles: log-sigma mu -/+ beta log(2 (1 - u)) on either side, u = i / 8
    u = 3 / 8
    assert math.log(float(sigmas[3])) == pytest.approx(0.7 - 1.3 * math.log(1 - 2 * (0.5 - u) + 1e-5), rel=1e-5)
    gaps = np.diff(np.log(sigmas.numpy()))
    assert abs(gaps[3]) < abs(gaps[1])  # closer together near the median


def test_beta_scheduler_at_its_defaults_is_the_beta_schedule() -> None:
    schedule = schedule_of(SD1.alphas_cumprod)
    for steps in (4, 13):
        (sigmas,) = run("BetaSamplingScheduler", model=MODEL, steps=steps, alpha=0.6, beta=0.6)
        assert torch.equal(sigmas, compute_sigmas(schedule, "beta", steps))
    (skewed,) = run("BetaSamplingScheduler", model=MODEL, steps=13, alpha=0.3, beta=1.7)
    assert not torch.equal(skewed, compute_sigmas(schedule, "beta", 13))
    with pytest.raises(ValueError, match="BetaSamplingScheduler.alpha"):
        run("BetaSamplingScheduler", model=MODEL, steps=4, alpha=0.0, beta=0.6)


def _f32(values: list[float]) -> list[float]:
    return torch.tensor(values, dtype=torch.float32).tolist()


def test_align_your_steps_uses_the_published_table() -> None:
    for family in ("SD1", "SDXL", "SVD"):
        row = TABLES["align_your_steps"][family]
        (ten,) = run("AlignYourStepsScheduler", model_type=family, steps=10, denoise=1.0)
        assert ten.tolist() == _f32(row[:-1]) + [0.0]  # the published 10 steps, the last sigma replaced by 0
        (tail,) = run("AlignYourStepsScheduler", model_type=family, steps=10, denoise=0.6)
        assert tail.tolist() == ten[-7:].tolist()  # the last round(10 * 0.6) = 6 steps
        (more,) = run("AlignYourStepsScheduler", model_type=family, steps=25, denoise=1.0)
        assert len(more) == 26 and more[0] == ten[0] and more[-1] == 0
        log_more = np.log(more[:-1].numpy())
        assert np.all(np.diff(log_more) < 0)
        # log-linear resampling: 25 steps put every 2.5th point on a published one (here steps 5, 10, ...)
        assert more[5] == pytest.approx(row[2], rel=1e-6) and more[20] == pytest.approx(row[8], rel=1e-6)
    (none,) = run("AlignYourStepsScheduler", model_type="SD1", steps=10, denoise=0.0)
    assert len(none) == 0


def test_gits_uses_the_table_of_its_coefficient_and_steps() -> None:
    rows = TABLES["gits"]["1.20"]
    for steps in (2, 9, 20):
        (sigmas,) = run("GITSScheduler", coeff=1.2, steps=steps, denoise=1.0)
        assert sigmas.tolist() == _f32(rows[steps - 2][:-1]) + [0.0]
    (long,) = run("GITSScheduler", coeff=1.2, steps=40, denoise=1.0)
    assert len(long) == 41 and long[0] == pytest.approx(rows[-1][0], rel=1e-6)
    assert long[2] == pytest.approx(rows[-1][1], rel=1e-6)  # 40 steps: every second point is a 20-step one
    (tail,) = run("GITSScheduler", coeff=1.2, steps=9, denoise=0.5)
    assert tail.tolist() == _f32(rows[7][-5:-1]) + [0.0]  # the last round(4.5) = 4 steps
    (other,) = run("GITSScheduler", coeff=0.85, steps=9, denoise=1.0)
    assert other.tolist() == _f32(TABLES["gits"]["0.85"][7][:-1]) + [0.0] and other.tolist() != sigmas.tolist()
    with pytest.raises(ValueError, match="GITSScheduler.coeff"):
        run("GITSScheduler", coeff=1.23, steps=9, denoise=1.0)


def test_extend_inserts_steps_minus_one_sigmas_where_asked() -> None:
    sigmas = torch.tensor([14.0, 8.0, 4.0, 1.0, 0.0], dtype=torch.float64)
    (linear,) = run("ExtendIntermediateSigmas", sigmas=sigmas, steps=4, start_at_sigma=-1.0, end_at_sigma=4.0,
                    spacing="linear")
    # 3 inserted after each of 14, 8 and 4 (the sigmas from the top down to end_at_sigma), none after 1
    assert linear.tolist() == [14.0, 12.5, 11.0, 9.5, 8.0, 7.0, 6.0, 5.0, 4.0, 3.25, 2.5, 1.75, 1.0, 0.0]
    (window,) = run("ExtendIntermediateSigmas", sigmas=sigmas, steps=2, start_at_sigma=8.0, end_at_sigma=1.0,
                    spacing="linear")
    assert window.tolist() == [14.0, 8.0, 6.0, 4.0, 2.5, 1.0, 0.5, 0.0]
    (cosine,) = run("ExtendIntermediateSigmas", sigmas=sigmas[:2], steps=3, start_at_sigma=-1.0, end_at_sigma=0.0,
                    spacing="cosine")
    (sine,) = run("ExtendIntermediateSigmas", sigmas=sigmas[:2], steps=3, start_at_sigma=-1.0, end_at_sigma=0.0,
                  spacing="sine")
    f = [math.sin(math.pi / 6), math.sin(math.pi / 3)], [1 - math.cos(math.pi / 6), 1 - math.cos(math.pi / 3)]
    assert cosine[1:3].tolist() == pytest.approx([14 - 6 * v for v in f[0]], rel=1e-6)
    assert sine[1:3].tolist() == pytest.approx([14 - 6 * v for v in f[1]], rel=1e-6)
    (same,) = run("ExtendIntermediateSigmas", sigmas=sigmas, steps=1, start_at_sigma=-1.0, end_at_sigma=0.0,
                  spacing="linear")
    assert same.tolist() == sigmas.tolist()
    with pytest.raises(ValueError, match="ExtendIntermediateSigmas.sigmas"):
        run("ExtendIntermediateSigmas", sigmas=[1.0, 0.0], steps=2, start_at_sigma=-1.0, end_at_sigma=0.0,
            spacing="linear")


def test_bislerp_turns_directions_and_blends_lengths() -> None:
    """Between two channel vectors of lengths 1 and 3 at right angles, a quarter of the way is a quarter of the
    right angle at length 1.5 (a bilinear blend would be at 45 degrees, length ~1.06); equal neighbours are kept
    as they are."""
    samples = torch.zeros((1, 2, 1, 2))
    samples[0, :, 0, 0] = torch.tensor([1.0, 0.0])
    samples[0, :, 0, 1] = torch.tensor([0.0, 3.0])
    out = bislerp(samples, 4, 1)  # output x positions 0.5 * k - 0.25 in source pixels, clamped
    mid = out[0, :, 0, 1]  # source position 0.25: a quarter of the way, 22.5 degrees
    angle = math.atan2(float(mid[1]), float(mid[0]))
    assert angle == pytest.approx(math.pi / 8, rel=1e-5) and float(mid.norm()) == pytest.approx(1.5, rel=1e-5)
    assert torch.allclose(out[0, :, 0, 0], samples[0, :, 0, 0]) and torch.allclose(out[0, :, 0, 3], samples[0, :, 0, 1])
    flat = torch.ones((1, 4, 3, 3))
    assert torch.equal(bislerp(flat, 7, 5), torch.ones((1, 4, 5, 7)))
    # one direction, lengths 1 and 3: ComfyUI keeps the first vector as it is (no length blend); opposite
    # directions blend linearly
    samples[0, :, 0, 1] = torch.tensor([3.0, 0.0])
    assert torch.equal(bislerp(samples, 4, 1)[0, :, 0, 1], torch.tensor([1.0, 0.0]))
    samples[0, :, 0, 1] = torch.tensor([-3.0, 0.0])
    assert torch.allclose(bislerp(samples, 4, 1)[0, :, 0, 1], torch.tensor([0.0, 0.0]))
