"""sdgraph's samplers against ComfyUI's own sampler functions on a toy denoiser (no model).

`data/toy_samplers.npz` holds ComfyUI's outputs (tools/comfy_reference/toy_samplers.py, ComfyUI a125cd8) for the
Gaussian-data denoiser of `toy_denoiser.py` on two schedules, started from the same seeded latent and given the
same seed. sdgraph draws its noise from the sources KSampler uses (the seeded generator, or the Brownian tree for
the SDE samplers), so a match also means the noise is queried where and when ComfyUI queries it.

Then each new sampler on the tiny SD1 model through KSampler: finite, reproducible with its seed, and (for the
stochastic ones) changed by the seed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from toy_denoiser import SEED, toy_denoise, toy_sigmas, toy_start
from sdgraph.nodes.sd.k_samplers import SAMPLER_NAMES, get_sampler
from sdgraph.nodes.sd.noise import BROWNIAN_SAMPLERS, SeededNoise, brownian_sampler

REFERENCE = np.load(Path(__file__).parent / "data" / "toy_samplers.npz")
CASES = sorted(REFERENCE.files)
NEW = ("dpm_fast", "dpm_adaptive", "heunpp2", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "ipndm", "ipndm_v", "deis", "res_multistep",
       "res_multistep_ancestral", "gradient_estimation", "er_sde", "seeds_2", "seeds_3")
STOCHASTIC = {"dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "res_multistep_ancestral", "er_sde", "seeds_2",
              "seeds_3"}


def run_toy(name: str, sigmas: torch.Tensor) -> torch.Tensor:
    x = toy_start(sigmas)
    if name in BROWNIAN_SAMPLERS:
        noise = brownian_sampler(SEED, x, sigmas.tolist())
    else:
        noise = SeededNoise(SEED, x.shape[0]).sampler(x)
    with torch.no_grad():
        return get_sampler(name)(toy_denoise, x, sigmas, noise_sampler=noise)


def test_every_new_sampler_has_a_reference() -> None:
    covered = {case.split("/")[1] for case in CASES}
    assert {n.removesuffix("_gpu") for n in NEW} <= covered
    assert set(NEW) <= set(SAMPLER_NAMES)


@pytest.mark.parametrize("case", CASES)
def test_matches_comfyui_on_the_toy_denoiser(case: str) -> None:
    schedule, name = case.split("/")
    out = run_toy(name, toy_sigmas(schedule))
    expected = torch.from_numpy(REFERENCE[case])
    assert out.dtype == torch.float32 and out.shape == expected.shape
    error = (out - expected).abs().max().item()
    assert error < 1e-5, f"{case}: max abs diff {error:.3g}"


def test_the_gpu_name_is_the_same_sampler() -> None:
    sigmas = toy_sigmas("karras")
    assert torch.equal(run_toy("dpmpp_2m_sde_heun_gpu", sigmas), run_toy("dpmpp_2m_sde_heun", sigmas))


def test_the_reference_tells_the_samplers_apart() -> None:
    """The toy problem is sharp enough that related samplers do not pass for each other."""
    for a, b in (("ipndm", "ipndm_v"), ("res_multistep", "gradient_estimation"), ("dpmpp_2m_sde", "dpmpp_2m_sde_heun"),
                 ("seeds_2", "seeds_3"), ("deis", "ipndm_v")):
        diff = np.abs(REFERENCE[f"uneven/{a}"] - REFERENCE[f"uneven/{b}"]).max()
        assert diff > 1e-3, (a, b, diff)


# ---- the tiny SD1 model through KSampler --------------------------------------------------------------------

from sampling_support import TinyModel, conditioning, empty_latent, tiny_unet  # noqa: E402
from sdgraph.context import InterruptFlag, NodeContext, Services  # noqa: E402
from sdgraph.node import define  # noqa: E402
from sdgraph.nodes.sd.sampling import KSampler  # noqa: E402


@pytest.fixture(scope="module")
def model() -> TinyModel:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads; on a shared CPU they only spin
    yield TinyModel(tiny_unet())
    torch.set_num_threads(threads)


def _ksample(model: TinyModel, sampler: str, seed: int) -> torch.Tensor:
    inputs = dict(model=model, seed=seed, steps=4, cfg=5.0, sampler_name=sampler, scheduler="karras",
                  positive=conditioning(1), negative=conditioning(2), latent_image=empty_latent(), denoise=1.0)
    ctx = NodeContext(node_id="3", prompt_id="p", services=Services(settings={}), interrupt=InterruptFlag(),
                      on_progress=lambda *a: None)
    return define(KSampler, "sd-sampling").invoke(inputs, ctx)[0]["samples"]


@pytest.mark.parametrize("sampler", NEW)
def test_new_sampler_on_the_tiny_model(model: TinyModel, sampler: str) -> None:
    first = _ksample(model, sampler, 3)
    assert torch.isfinite(first).all() and first.abs().max() > 0
    assert torch.equal(_ksample(model, sampler, 3), first)
    if sampler in STOCHASTIC:
        assert not torch.allclose(_ksample(model, sampler, 4), first, atol=1e-4)
