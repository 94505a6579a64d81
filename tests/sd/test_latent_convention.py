"""LATENT samples are unscaled, as in ComfyUI: the VAE gives and takes its own latents; the sampler scales them
into the model's space with the MODEL's latent format, adds the noise and blends the noise mask there, and scales
the result back out. An all-zero (empty) latent is not shifted on the way in."""
from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from conftest import call
from sampling_support import TinyModel, conditioning, tiny_unet
from sdgraph.nodes.sd import latent as latent_nodes
from sdgraph.nodes.sd import sampling
from sdgraph.nodes.sd.denoiser import SDDenoiser
from sdgraph.nodes.sd.loading import load_checkpoint
from sdgraph.nodes.sd.model_objects import LatentFormat
from sdgraph.nodes.sd.noise import initial_noise
from sdgraph.paths import PACKAGE_DATA

# A shift as well as a scale, so that the order, (latent - shift) * scale, shows.
FORMAT = LatentFormat(scale_factor=0.5, shift_factor=0.25)
SEED = 3


@pytest.fixture(scope="module")
def model() -> TinyModel:
    return TinyModel(tiny_unet(), latent_format=FORMAT)


def test_latent_format_shifts_then_scales_and_reads_a_vae_config() -> None:
    assert FORMAT.process_in(torch.tensor([1.25])).item() == 0.5
    assert FORMAT.process_out(torch.tensor([0.5])).item() == 1.25
    assert LatentFormat.from_vae_config({"scaling_factor": 0.13025, "shift_factor": None}) == LatentFormat(0.13025)
    assert LatentFormat() == LatentFormat(0.18215, 0.0)  # SD 1.x when nothing says otherwise


def test_vae_nodes_give_and_take_the_vaes_own_latents(ctx: Any, sd1: Any) -> None:
    _, _, vae = sd1
    pixels = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    (encoded,) = call(latent_nodes.VAEEncode, ctx, pixels=pixels, vae=vae)
    module = vae.slot.module
    with torch.inference_mode():
        raw = module.encode(pixels.movedim(-1, 1) * 2.0 - 1.0).latent_dist.mode()
        direct = ((module.decode(raw).sample + 1.0) / 2.0).clamp(0, 1).movedim(1, -1)
    torch.testing.assert_close(encoded["samples"], raw)  # not multiplied by the scaling factor
    (decoded,) = call(latent_nodes.VAEDecode, ctx, samples=encoded, vae=vae)
    torch.testing.assert_close(decoded, direct)


def test_the_default_model_knows_its_latent_format_from_its_own_vae_config(manager: Any) -> None:
    folder = PACKAGE_DATA / "models" / "checkpoints" / "sdgraph-tiny"
    scale = json.loads((folder / "vae" / "config.json").read_text())["scaling_factor"]
    model, _, _ = load_checkpoint(folder, manager)
    assert model.latent_format == LatentFormat(scale, 0.0) and scale != LatentFormat().scale_factor


def _sample(model: TinyModel, latent: dict[str, Any], add_noise: bool = True) -> tuple[torch.Tensor, dict]:
    """One KSampler step whose 'sampler' records what it starts from and returns the masked denoiser's estimate;
    the UNet's part (SDDenoiser) records its input and predicts all zeros."""
    seen: dict[str, torch.Tensor] = {}

    def denoiser(self: Any, x: torch.Tensor, sigma: float) -> torch.Tensor:
        seen["unet_x"] = x.clone()
        return torch.zeros_like(x)

    def one_step(denoise: Any, x: torch.Tensor, sigmas: Any, **_: Any) -> torch.Tensor:
        seen["x"] = x.clone()
        return denoise(x, float(sigmas[0]))

    plan = sampling.plan_sigmas(model, "normal", 2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SDDenoiser, "__call__", denoiser)
        patch.setattr(sampling, "get_sampler", lambda name: one_step)
        out = sampling.sample_latent(model, conditioning(1), conditioning(2), latent, seed=SEED, cfg=1.0,
                                     sampler_name="euler", plan=plan, add_noise=add_noise)["samples"]
    seen["sigma"] = torch.tensor(float(plan.sigmas[0]))
    return out, seen


def test_noise_is_added_to_the_scaled_latent_and_the_result_scaled_out(model: TinyModel) -> None:
    latent = {"samples": torch.full((1, 4, 8, 8), 1.25)}  # 0.5 in the model's space
    out, seen = _sample(model, latent)
    noise, _ = initial_noise(SEED, latent["samples"])
    sigma = float(seen["sigma"])
    torch.testing.assert_close(seen["x"], 0.5 + noise * (1 + sigma ** 2) ** 0.5)
    torch.testing.assert_close(out, torch.full_like(out, 0.25))  # the zero estimate, scaled out: 0 / 0.5 + 0.25


def test_an_empty_latent_is_not_shifted_into_the_models_space(model: TinyModel) -> None:
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    _, seen = _sample(model, latent)
    noise, _ = initial_noise(SEED, latent["samples"])
    sigma = float(seen["sigma"])
    torch.testing.assert_close(seen["x"], noise * (1 + sigma ** 2) ** 0.5)  # no (0 - 0.25) * 0.5 added


def _half_mask() -> torch.Tensor:
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 4:] = 1.0
    return mask


@pytest.mark.parametrize("add_noise", [True, False])
def test_the_noise_mask_blends_with_the_scaled_latent(model: TinyModel, add_noise: bool) -> None:
    samples = torch.full((1, 4, 8, 8), 1.25)
    out, seen = _sample(model, {"samples": samples, "noise_mask": _half_mask()}, add_noise)
    noise, _ = initial_noise(SEED, samples)
    sigma = float(seen["sigma"])
    # the kept half: the scaled latent renoised to sigma (without added noise, as ComfyUI, with no noise at all)
    known = 0.5 + noise * sigma if add_noise else torch.full_like(samples, 0.5)
    torch.testing.assert_close(seen["unet_x"][..., :4], known[..., :4])
    torch.testing.assert_close(seen["unet_x"][..., 4:], seen["x"][..., 4:])
    torch.testing.assert_close(out[..., :4], samples[..., :4])  # the original latent, scaled in and out
    torch.testing.assert_close(out[..., 4:], torch.full_like(out[..., 4:], 0.25))
