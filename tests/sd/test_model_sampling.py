"""Model sampling objects (ComfyUI's ModelSampling shape) and the nodes that patch them in: each noise-level family
and parametrisation against its definition, and an object patch changing what sampling does (schedules, the
UNet's timestep, how its output is read, the latent space)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import call, make_ctx  # noqa: E402
from sampling_support import DATA_STD, GaussianDataUNet, exact_denoised, mean_conditioning  # noqa: E402
from toy_unet import ToyUNet, toy_latent, toy_text  # noqa: E402

from sdgraph.nodes.sd import sampling  # noqa: E402
from sdgraph.nodes.sd.custom_sigmas import SamplingPercentToSigma, SDTurboScheduler  # noqa: E402
from sdgraph.nodes.sd.denoiser import SDDenoiser  # noqa: E402
from sdgraph.nodes.sd.model_objects import DiffusionModel, sd_alphas_cumprod  # noqa: E402
from sdgraph.nodes.sd.model_sampling import (ZSNR_LAST_ALPHA_BAR, ContinuousVSampling,  # noqa: E402
                                             CosmosRFlowSampling, discrete_sampling, model_sampling_of,
                                             prediction_named)
from sdgraph.nodes.sd.model_sampling_nodes import (PLAYGROUND_V25, ModelSamplingContinuousEDM,  # noqa: E402
                                                   ModelSamplingContinuousV, ModelSamplingDiscrete)
from sdgraph.nodes.sd.sampling import KSampler, plan_sigmas  # noqa: E402
from sdgraph.nodes.sd.schedules import schedule_of  # noqa: E402
from sdgraph.paths import Dirs  # noqa: E402

MEAN = (0.3, -0.5, 0.8, 0.1)
TERMINAL = math.sqrt((1 - ZSNR_LAST_ALPHA_BAR) / ZSNR_LAST_ALPHA_BAR)  # ~4518.76, a zsnr schedule's top


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: Any, manager: Any) -> Any:
    return make_ctx(Dirs(base=tmp_path_factory.mktemp("toy-home"), extra_model_roots=[]), manager)


@pytest.fixture(scope="module")
def toy(manager: Any) -> DiffusionModel:
    return DiffusionModel(slot=manager.manage(ToyUNet(), "toy-ms:unet", "unet"), name="toy")


class TimestepProbe(torch.nn.Module):
    """A UNet that records the timesteps and inputs it is given and answers a fixed function of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: Any, return_dict: bool = True,
                **_: Any) -> tuple[torch.Tensor]:
        self.seen.append((x.clone(), t.clone()))
        return (0.5 * x + 0.1,)


@pytest.fixture
def probe(manager: Any) -> DiffusionModel:
    return DiffusionModel(slot=manager.manage(TimestepProbe(), "probe:unet", "unet"), name="probe")


# ---- the discrete schedule and zero terminal SNR ----------------------------------------------------------


def test_zsnr_rescales_sqrt_alpha_bar_to_end_at_zero_keeping_the_first_level() -> None:
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2
    root = np.sqrt(np.cumprod(1 - betas))
    shifted = (root - root[-1]) * root[0] / (root[0] - root[-1])  # Lin et al. 2023, algorithm 1
    alpha_bar = shifted ** 2
    alpha_bar[-1] = ZSNR_LAST_ALPHA_BAR
    expected = np.sqrt((1 - alpha_bar) / alpha_bar)
    ms = discrete_sampling(sd_alphas_cumprod(), "eps", zsnr=True)
    np.testing.assert_allclose(ms.sigmas.double().numpy(), expected.astype(np.float32), rtol=1e-6)
    assert float(ms.sigma_max) == pytest.approx(TERMINAL, rel=1e-6)  # terminal: almost pure noise
    assert float(ms.sigma_min) == float(discrete_sampling(sd_alphas_cumprod()).sigma_min)
    sigmas = plan_sigmas(_patched_sampling(ms), "normal", 4).sigmas
    assert float(sigmas[0]) == pytest.approx(TERMINAL, rel=1e-6)  # the schedules start there


def _patched_sampling(ms: Any) -> Any:
    class Model:
        alphas_cumprod = sd_alphas_cumprod()

        def get_model_object(self, name: str) -> Any:
            return ms

    return Model()


def test_discrete_timestep_is_the_nearest_and_sigma_interpolates_log_sigma() -> None:
    ms = discrete_sampling(sd_alphas_cumprod())
    log = schedule_of(sd_alphas_cumprod()).log_sigmas
    between = torch.tensor([math.exp(0.7 * log[300] + 0.3 * log[301]), math.exp(0.2 * log[300] + 0.8 * log[301])])
    assert ms.timestep(between).tolist() == [300, 301]
    assert float(ms.sigma(torch.tensor(300.25))) == pytest.approx(math.exp(0.75 * log[300] + 0.25 * log[301]),
                                                                  rel=1e-6)
    assert ms.percent_to_sigma(0.0) > 1e8 and ms.percent_to_sigma(1.0) == 0.0
    assert ms.percent_to_sigma(0.5) == pytest.approx(float(ms.sigma(torch.tensor(499.5))))


def test_lcm_samples_the_fifty_distilled_levels_with_the_consistency_output() -> None:
    full = discrete_sampling(sd_alphas_cumprod())
    ms = discrete_sampling(sd_alphas_cumprod(), "lcm", distilled=True)
    assert torch.equal(ms.sigmas, full.sigmas[19::20]) and len(ms.sigmas) == 50
    assert ms.timestep(full.sigmas[[19, 519, 999]]).tolist() == [19, 519, 999]
    assert float(ms.sigma(torch.tensor(519.0))) == pytest.approx(float(full.sigmas[519]), rel=1e-6)
    x, out, sigma = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), float(full.sigmas[519])
    scaled = 5190.0  # 10 x the timestep
    c_skip, c_out = 0.25 / (scaled ** 2 + 0.25), scaled / math.sqrt(scaled ** 2 + 0.25)
    expected = c_out * (x - sigma * out) + c_skip * x
    torch.testing.assert_close(ms.calculate_denoised(sigma, out, x), expected)
    torch.testing.assert_close(ms.calculate_denoised(torch.tensor([sigma]), out, x), expected)
    # c_skip alone, at the lowest distilled timestep (19): an output whose epsilon x0 is 0
    low = float(full.sigmas[19])
    c_skip = 0.25 / (190.0 ** 2 + 0.25)
    x_low = out * torch.tensor(low)  # exactly sigma times the output
    torch.testing.assert_close(ms.calculate_denoised(low, out, x_low), c_skip * x_low, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", ["x0", "img_to_img"])
def test_x0_parametrisations_read_the_output_as_the_clean_latent(name: str) -> None:
    ms = discrete_sampling(sd_alphas_cumprod(), name)
    x, out = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    assert torch.equal(ms.calculate_denoised(3.0, out, x), out)
    scaled = ms.calculate_input(3.0, x)
    torch.testing.assert_close(scaled, x if name == "img_to_img" else x / math.sqrt(10.0))


# ---- v-prediction makes a v model denoise correctly -------------------------------------------------------


class VGaussianUNet(GaussianDataUNet):
    """The exact v-prediction (alpha eps - sigma_vp x0) for Gaussian data of the conditioning's mean."""

    def forward(self, x_in: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                return_dict: bool = True, **kwargs: Any) -> tuple[torch.Tensor]:
        sigma = self.schedule.sigma(float(t.flatten()[0]))
        x = x_in.double() * (sigma ** 2 + 1) ** 0.5
        mean = encoder_hidden_states[:, 0, :4].double().reshape(-1, 4, 1, 1)
        x0 = exact_denoised(x, sigma, mean)
        eps = (x - x0) / sigma
        return (((eps - sigma * x0) / (sigma ** 2 + 1) ** 0.5).to(x_in.dtype),)


def test_v_prediction_patch_makes_a_v_model_denoise_to_the_exact_answer(manager: Any, ctx: Any) -> None:
    model = DiffusionModel(slot=manager.manage(VGaussianUNet(sd_alphas_cumprod()), "vgauss:unet", "unet"),
                           prediction_type="epsilon", name="v-model-read-as-eps")
    patched = call(ModelSamplingDiscrete, ctx, model=model, sampling="v_prediction", zsnr=False)[0]
    positive = mean_conditioning(MEAN)
    table = schedule_of(model.alphas_cumprod).sigmas
    for t in (50, 400, 900):  # training levels: the UNet sees the sigma it is evaluated at
        sigma = float(table[t].float())
        x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(t)) * (1 + sigma)
        exact = exact_denoised(x, sigma, torch.tensor(MEAN, dtype=torch.float64).view(1, 4, 1, 1))
        with torch.inference_mode():
            right = SDDenoiser(patched, positive, [], 1.0, x)(x, sigma)
            wrong = SDDenoiser(model, positive, [], 1.0, x)(x, sigma)
        torch.testing.assert_close(right.double(), exact, atol=1e-4 * (1 + sigma), rtol=0)
        assert float((wrong.double() - exact).abs().max()) > 0.1
    assert model.get_model_object("model_sampling").prediction_type == "eps"  # the source MODEL is untouched


def test_v_prediction_patch_samples_the_data_distribution(manager: Any, ctx: Any) -> None:
    model = DiffusionModel(slot=manager.manage(VGaussianUNet(sd_alphas_cumprod()), "vgauss2:unet", "unet"),
                           name="v-model")
    patched = call(ModelSamplingDiscrete, ctx, model=model, sampling="v_prediction", zsnr=False)[0]
    latent = {"samples": torch.zeros(1, 4, 64, 64)}
    out = call(KSampler, ctx, model=patched, seed=4, steps=30, cfg=1.0, sampler_name="euler", scheduler="karras",
               positive=mean_conditioning(MEAN), negative=mean_conditioning(MEAN), latent_image=latent)[0]
    data = patched.latent_format.process_in(out["samples"]).double()[0]
    np.testing.assert_allclose(data.mean(dim=(1, 2)).numpy(), MEAN, atol=0.05)
    np.testing.assert_allclose(data.std(dim=(1, 2)).numpy(), DATA_STD.flatten().numpy(), rtol=0.1)


# ---- continuous samplings -------------------------------------------------------------------------------


def test_edm_patch_gives_the_unet_edm_timesteps_and_reads_edm_preconditioning(probe: DiffusionModel,
                                                                              ctx: Any) -> None:
    patched = call(ModelSamplingContinuousEDM, ctx, model=probe, sampling="edm", sigma_max=120.0,
                   sigma_min=0.002)[0]
    ms = model_sampling_of(patched)
    plan = plan_sigmas(patched, "karras", 5)
    assert float(plan.sigmas[0]) == pytest.approx(120.0, rel=1e-5) and float(plan.sigmas[-2]) == pytest.approx(
        0.002, rel=1e-5)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    sigma = 7.0
    with torch.inference_mode():
        out = SDDenoiser(patched, [[toy_text(1), {}]], [], 1.0, x)(x, sigma)
    seen_x, seen_t = probe.slot.module.seen[-1]
    assert float(seen_t.flatten()[0]) == pytest.approx(0.25 * math.log(sigma), rel=1e-6)
    sd = 0.5
    torch.testing.assert_close(seen_x, x / math.sqrt(sigma ** 2 + sd ** 2))
    raw = 0.5 * seen_x + 0.1
    expected = x * sd ** 2 / (sigma ** 2 + sd ** 2) + raw * sigma * sd / math.sqrt(sigma ** 2 + sd ** 2)
    torch.testing.assert_close(out, expected)
    assert ms.percent_to_sigma(0.5) == pytest.approx(math.sqrt(120.0 * 0.002), rel=1e-5)  # log-linear


def test_continuous_v_timestep_is_two_over_pi_atan_sigma(probe: DiffusionModel, ctx: Any) -> None:
    patched = call(ModelSamplingContinuousV, ctx, model=probe, sampling="v_prediction", sigma_max=500.0,
                   sigma_min=0.03)[0]
    x = torch.randn(1, 4, 4, 4)
    with torch.inference_mode():
        SDDenoiser(patched, [[toy_text(1), {}]], [], 1.0, x)(x, 2.0)
    assert float(probe.slot.module.seen[-1][1].flatten()[0]) == pytest.approx(math.atan(2.0) * 2 / math.pi)
    ms = model_sampling_of(patched)
    assert isinstance(ms, ContinuousVSampling) and float(ms.sigma(ms.timestep(torch.tensor(3.0)))) == pytest.approx(
        3.0, rel=1e-5)


def test_cosmos_rflow_parametrisation() -> None:
    ms = CosmosRFlowSampling(0.002, 80.0, 1.0, prediction_named("cosmos_rflow"))
    x, out, sigma = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), 3.0
    s = sigma / (sigma + 1)
    torch.testing.assert_close(ms.calculate_input(sigma, x), x * (1 - s))
    torch.testing.assert_close(ms.calculate_denoised(sigma, out, x), x * (1 - s) - out * s)
    assert float(ms.sigma(ms.timestep(torch.tensor(3.0)))) == pytest.approx(3.0, rel=1e-5)
    assert float(ms.sigma(torch.tensor(0.9999))) == pytest.approx(80.0, rel=1e-5)  # capped at sigma_max


def test_playground_patch_switches_the_latent_space(toy: DiffusionModel, ctx: Any) -> None:
    patched = call(ModelSamplingContinuousEDM, ctx, model=toy, sampling="edm_playground_v2.5", sigma_max=80.0,
                   sigma_min=0.002)[0]
    latent = toy_latent()
    mean = torch.tensor(PLAYGROUND_V25.mean).view(1, 4, 1, 1)
    std = torch.tensor(PLAYGROUND_V25.std).view(1, 4, 1, 1)
    torch.testing.assert_close(sampling.scale_in(patched, latent), (latent - mean) * 0.5 / std)
    torch.testing.assert_close(PLAYGROUND_V25.process_out(PLAYGROUND_V25.process_in(latent)), latent)
    assert model_sampling_of(patched).sigma_data == 0.5
    torch.testing.assert_close(sampling.scale_in(toy, latent), latent * 0.18215)


# ---- an object patch reaches every reader -----------------------------------------------------------------


def test_the_patched_sampling_drives_the_schedule_nodes(toy: DiffusionModel, ctx: Any) -> None:
    edm = call(ModelSamplingContinuousEDM, ctx, model=toy, sampling="eps", sigma_max=50.0, sigma_min=0.01)[0]
    assert call(SamplingPercentToSigma, ctx, model=edm, sampling_percent=0.0, return_actual_sigma=True)[0] == \
        pytest.approx(50.0, rel=1e-5)
    assert call(SamplingPercentToSigma, ctx, model=edm, sampling_percent=1.0, return_actual_sigma=True)[0] == \
        pytest.approx(0.01, rel=1e-5)
    zsnr = call(ModelSamplingDiscrete, ctx, model=toy, sampling="eps", zsnr=True)[0]
    assert float(call(SDTurboScheduler, ctx, model=zsnr, steps=1, denoise=1.0)[0][0]) == pytest.approx(TERMINAL,
                                                                                                      rel=1e-6)
    assert sampling.model_sampler_options("sa_solver", edm)["tau_interval"] == (
        pytest.approx(math.exp(math.log(0.01) + 0.8 * math.log(5000.0)), rel=1e-5),
        pytest.approx(math.exp(math.log(0.01) + 0.2 * math.log(5000.0)), rel=1e-5))


def test_continuous_nodes_refuse_non_positive_bounds(toy: DiffusionModel, ctx: Any) -> None:
    with pytest.raises(ValueError, match="ModelSamplingContinuousEDM.sigma_min"):
        call(ModelSamplingContinuousEDM, ctx, model=toy, sampling="edm", sigma_max=80.0, sigma_min=0.0)
    with pytest.raises(ValueError, match="ModelSamplingContinuousV.sigma_max"):
        call(ModelSamplingContinuousV, ctx, model=toy, sampling="v_prediction", sigma_max=0.0, sigma_min=0.03)
    with pytest.raises(ValueError, match="ModelSamplingDiscrete.model"):
        call(ModelSamplingDiscrete, ctx, model=None, sampling="eps", zsnr=False)
