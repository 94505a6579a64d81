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

from toy_denoiser import SEED, ToyGuidedDenoiser, toy_denoise, toy_sigmas, toy_start
from sdgraph.nodes.sd.k_samplers import SAMPLER_NAMES, get_sampler
from sdgraph.nodes.sd.noise import BROWNIAN_SAMPLERS, SeededNoise, brownian_sampler

REFERENCE = np.load(Path(__file__).parent / "data" / "toy_samplers.npz")
CASES = sorted(REFERENCE.files)
NEW = ("dpm_fast", "dpm_adaptive", "heunpp2", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "ipndm", "ipndm_v", "deis", "res_multistep",
       "res_multistep_ancestral", "gradient_estimation", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp",
       "dpmpp_2m_cfg_pp", "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp", "gradient_estimation_cfg_pp")
STOCHASTIC = {"dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "res_multistep_ancestral", "er_sde", "seeds_2",
              "seeds_3", "sa_solver", "sa_solver_pece", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "res_multistep_ancestral_cfg_pp"}


def run_toy(name: str, sigmas: torch.Tensor) -> torch.Tensor:
    x = toy_start(sigmas)
    if name in BROWNIAN_SAMPLERS:
        noise = brownian_sampler(SEED, x, sigmas.tolist())
    else:
        noise = SeededNoise(SEED, x.shape[0]).sampler(x)
    with torch.no_grad():
        denoise = ToyGuidedDenoiser() if name.endswith("_cfg_pp") else toy_denoise
        return get_sampler(name)(denoise, x, sigmas, noise_sampler=noise)


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


def test_sa_solver_noise_interval_is_comfyuis() -> None:
    """SD's schedule at 20% and 80%: ComfyUI's percent_to_sigma(0.2), (0.8) on its discrete EPS sampling."""
    from sdgraph.nodes.sd.k_sa_solver import sa_tau_interval  # noqa: PLC0415

    start, end = sa_tau_interval()
    assert (start, end) == (5.092408180236816, 0.5711888670921326)  # ComfyUI a125cd8, measured


def test_the_gpu_name_is_the_same_sampler() -> None:
    sigmas = toy_sigmas("karras")
    assert torch.equal(run_toy("dpmpp_2m_sde_heun_gpu", sigmas), run_toy("dpmpp_2m_sde_heun", sigmas))


def test_the_reference_tells_the_samplers_apart() -> None:
    """The toy problem is sharp enough that related samplers do not pass for each other."""
    for a, b in (("ipndm", "ipndm_v"), ("res_multistep", "gradient_estimation"), ("dpmpp_2m_sde", "dpmpp_2m_sde_heun"),
                 ("seeds_2", "seeds_3"), ("deis", "ipndm_v"), ("sa_solver", "sa_solver_pece")):
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


def test_sampler_combo_is_comfyuis_list() -> None:
    import json  # noqa: PLC0415

    reference = Path("/work/shared/reference/comfyui-core-nodes.json")
    if not reference.exists():
        pytest.skip("ComfyUI's object_info dump is not on this machine")
    comfy = json.loads(reference.read_text())["KSampler"]["input"]["required"]["sampler_name"][0]
    assert comfy == list(SAMPLER_NAMES)
    from sdgraph.nodes.sd import sampling  # noqa: PLC0415
    from sdgraph.registry import Registry  # noqa: PLC0415

    registry = Registry()
    registry.add_native(sampling.NODES, "sd-sampling")
    info = registry.describe()
    for node in ("KSampler", "KSamplerAdvanced"):
        assert info[node]["input"]["required"]["sampler_name"][0] == list(SAMPLER_NAMES)


@pytest.mark.parametrize("cfg", [1.0, 3.5])
def test_the_denoiser_hands_cfg_pp_the_unconditional_prediction(model: TinyModel, cfg: float) -> None:
    """with_uncond gives the guided estimate (as the plain call) and the negative prompt's own estimate, also at
    cfg 1, where the plain denoiser skips the negative side."""
    from sdgraph.nodes.sd.denoiser import SDDenoiser  # noqa: PLC0415

    latent = empty_latent()["samples"]
    x = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0)) * 3.0
    pos, neg = conditioning(1), conditioning(2)
    with torch.inference_mode():
        denoised, uncond = SDDenoiser(model, pos, neg, cfg, latent, keep_uncond=True).with_uncond(x, 3.0)
        plain = SDDenoiser(model, pos, neg, cfg, latent)(x, 3.0)
        negative_alone = SDDenoiser(model, neg, neg, 1.0, latent)(x, 3.0)
    assert torch.allclose(denoised, plain, atol=1e-5)
    assert torch.allclose(uncond, negative_alone, atol=1e-5)
    assert not torch.allclose(uncond, denoised, atol=1e-3)
    with pytest.raises(RuntimeError, match="keep_uncond"):
        SDDenoiser(model, pos, neg, cfg, latent).with_uncond(x, 3.0)


def test_cfg_pp_inpainting_keeps_the_unmasked_region(model: TinyModel) -> None:
    latent = {"samples": torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(5)),
              "noise_mask": torch.zeros((1, 1, 8, 8))}
    latent["noise_mask"][..., :4] = 1.0
    inputs = dict(model=model, seed=1, steps=4, cfg=1.5, sampler_name="euler_cfg_pp", scheduler="karras",
                  positive=conditioning(1), negative=conditioning(2), latent_image=latent, denoise=1.0)
    ctx = NodeContext(node_id="3", prompt_id="p", services=Services(settings={}), interrupt=InterruptFlag(),
                      on_progress=lambda *a: None)
    out = define(KSampler, "sd-sampling").invoke(inputs, ctx)[0]["samples"]
    assert torch.allclose(out[..., 4:], latent["samples"][..., 4:], atol=1e-4)
    assert not torch.allclose(out[..., :4], latent["samples"][..., :4], atol=1e-2)
