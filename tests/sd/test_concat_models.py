"""Inpainting (9-channel) and InstructPix2Pix (8-channel) SD 1.x checkpoints: they load, their conditioning
nodes record exactly the tensors ComfyUI records, and their UNet receives [x * c_in, mask, masked latent] or
[x * c_in, image latent] as ComfyUI builds them (checked on the UNet's actual input)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from conftest import call
from sdgraph.nodes.sd.checkpoint_layout import read_layout
from sdgraph.nodes.sd.concat_cond import BLANK_INPAINT, center_resize, concat_kind, resize_batch
from sdgraph.nodes.sd.conditioning import TextEncode
from sdgraph.nodes.sd.denoiser import SDDenoiser
from sdgraph.nodes.sd.inpaint_conditioning import InpaintModelConditioning, InstructPixToPixConditioning
from sdgraph.nodes.sd.latent import VAEEncodeForInpaint
from sdgraph.nodes.sd.loading import load_checkpoint
from sdgraph.nodes.sd.sampling import KSampler
from sdgraph.nodes.sd.weight_file import open_weights
from tiny_models import SD1_UNET, TinyParts, _randomize, save_single_file


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from threads; on a shared CPU they only spin
    yield
    torch.set_num_threads(threads)


def _checkpoint(folder: Path, parts: TinyParts, in_channels: int, seed: int) -> Path:
    """The tiny SD 1.x checkpoint's VAE and text encoder with a UNet of `in_channels` inputs."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**dict(SD1_UNET, in_channels=in_channels))
    _randomize(unet)
    path = folder / f"sd1-tiny-{in_channels}ch.safetensors"
    save_single_file(path, "sd1", TinyParts(unet.eval(), parts.vae, parts.encoders))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, tiny_tree: dict[str, Any]) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("concat_models")
    parts = tiny_tree["sd1"]  # the session's tiny SD 1.x parts: its VAE and text encoder
    return {9: _checkpoint(folder, parts, 9, 11), 8: _checkpoint(folder, parts, 8, 12)}


@pytest.fixture(scope="module")
def inpaint(files: dict[int, Path], manager: Any) -> tuple[Any, Any, Any]:
    return load_checkpoint(files[9], manager)


@pytest.fixture(scope="module")
def ip2p(files: dict[int, Path], manager: Any) -> tuple[Any, Any, Any]:
    return load_checkpoint(files[8], manager)


class Inputs:
    """Records the UNet's input tensor of every call."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.seen: list[torch.Tensor] = []
        self.handle = unet.register_forward_pre_hook(lambda m, args: self.seen.append(args[0].clone()))

    def __enter__(self) -> "Inputs":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()


def image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


def test_nine_and_eight_channel_checkpoints_load(files, inpaint, ip2p):
    assert read_layout(open_weights(files[9])).unet["in_channels"] == 9
    assert read_layout(open_weights(files[8])).unet["in_channels"] == 8
    assert inpaint[0].unet().config.in_channels == 9 and ip2p[0].unet().config.in_channels == 8
    assert inpaint[0].latent_channels == ip2p[0].latent_channels == 4
    assert (concat_kind(inpaint[0].unet()), concat_kind(ip2p[0].unet())) == ("inpaint", "ip2p")
    assert concat_kind(torch.nn.Module()) is None, "a UNet without a config: plain"
    with pytest.raises(ValueError, match="takes 6 input channels"):
        concat_kind(type("U", (), {"config": type("C", (), {"in_channels": 6})()})())


def test_batch_and_centre_resizing_are_comfyuis():
    items = torch.arange(4.0).reshape(4, 1, 1, 1)
    assert resize_batch(items[:2], 4).flatten().tolist() == [0, 0, 1, 1]  # floor((i + 0.5) * 2 / 4)
    assert resize_batch(items, 2).flatten().tolist() == [0, 3]  # round(i * 3 / 1)
    assert resize_batch(items[:3], 2).flatten().tolist() == [0, 2]
    assert resize_batch(items, 1).flatten().tolist() == [0]
    wide = torch.rand(1, 1, 4, 8)
    assert torch.equal(center_resize(wide, 4, 4), wide[..., 2:6])  # the middle of the wider side, same size
    tall = torch.rand(1, 1, 12, 4)
    torch.testing.assert_close(center_resize(tall, 4, 4), F.interpolate(tall[:, :, 4:8], size=(4, 4), mode="bilinear"))


def test_inpaint_conditioning_records_comfyuis_tensors(ctx, inpaint):
    _, clip, vae = inpaint
    pixels, mask = image(70, 67), torch.rand(1, 35, 34, generator=torch.Generator().manual_seed(1))
    pos, neg = call(TextEncode, ctx, text="a cat", clip=clip)[0], call(TextEncode, ctx, text="", clip=clip)[0]
    positive, negative, latent = call(InpaintModelConditioning, ctx, positive=pos, negative=neg, vae=vae,
                                      pixels=pixels, mask=mask, noise_mask=True)
    # by hand: the mask at the image's size, both centre-cropped to 64x64 (offsets (70 % 8) // 2, (67 % 8) // 2)
    m = F.interpolate(mask[None], size=(70, 67), mode="bilinear")[:, :, 3:67, 1:65]
    cropped = pixels[:, 3:67, 1:65]
    greyed = torch.where(m[:, 0, :, :, None].round() == 1, torch.full_like(cropped, 0.5), cropped)
    for extras in (positive[0][1], negative[0][1]):
        assert torch.equal(extras["concat_mask"], m)
        torch.testing.assert_close(extras["concat_latent_image"], vae.encode(greyed), rtol=0, atol=1e-5)
    assert torch.equal(latent["samples"], vae.encode(cropped)) and torch.equal(latent["noise_mask"], m)
    assert 0.2 < float(m.round().mean()) < 0.8, "the mask greys out part of the image"
    assert (vae.encode(greyed) - latent["samples"]).abs().max() > 1e-3
    (*_, no_mask) = call(InpaintModelConditioning, ctx, positive=pos, negative=neg, vae=vae, pixels=pixels,
                         mask=mask, noise_mask=False)
    assert "noise_mask" not in no_mask
    with pytest.raises(ValueError, match="InpaintModelConditioning.mask: 2 masks for 1 images"):
        call(InpaintModelConditioning, ctx, positive=pos, negative=neg, vae=vae, pixels=pixels,
             mask=torch.rand(2, 8, 8), noise_mask=True)


def test_inpaint_unet_receives_latent_mask_and_masked_latent(ctx, inpaint):
    model, clip, vae = inpaint
    pixels = image(64, 64, 3)
    mask = torch.zeros(1, 64, 64)
    mask[:, 8:40, 16:56] = torch.rand(32, 40, generator=torch.Generator().manual_seed(7))  # soft: rounding shows
    pos, neg = call(TextEncode, ctx, text="a cat", clip=clip)[0], call(TextEncode, ctx, text="", clip=clip)[0]
    positive, negative, latent = call(InpaintModelConditioning, ctx, positive=pos, negative=neg, vae=vae,
                                      pixels=pixels, mask=mask, noise_mask=True)
    masked = positive[0][1]["concat_latent_image"]
    expected_mask = F.interpolate(mask[None], size=(8, 8), mode="bilinear").round()
    expected_image = masked * model.latent_format.scale_factor
    x, sigma = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2)) * 2.0, 2.0
    with Inputs(model.unet()) as inputs, torch.inference_mode():
        denoiser = SDDenoiser(model, positive, negative, 5.0, latent["samples"])
        denoiser.set_noise_mask(latent["noise_mask"])
        denoiser(x, sigma)
    (seen,) = inputs.seen  # one batched [uncond; cond] call
    assert seen.shape == (2, 9, 8, 8)
    torch.testing.assert_close(seen[:, :4], torch.cat([x, x]) / math.sqrt(sigma ** 2 + 1), rtol=0, atol=1e-6)
    assert torch.equal(seen[:, 4:5], torch.cat([expected_mask, expected_mask]))
    assert 0 < float(expected_mask.mean()) < 1
    torch.testing.assert_close(seen[:, 5:], torch.cat([expected_image, expected_image]), rtol=0, atol=1e-6)
    # an area entry gets the same channels cropped to its area
    area = [[positive[0][0], {**positive[0][1], "area": (4, 4, 2, 2)}]]
    with Inputs(model.unet()) as inputs, torch.inference_mode():
        SDDenoiser(model, positive + area, [], 1.0, latent["samples"])(x, sigma)
    full, crop = inputs.seen
    assert crop.shape == (1, 9, 4, 4) and torch.equal(crop[:, 4:], full[:, 4:, 2:6, 2:6])
    with Inputs(model.unet()) as inputs:
        out = call(KSampler, ctx, model=model, seed=1, steps=2, cfg=4.0, sampler_name="euler", scheduler="normal",
                   positive=positive, negative=negative, latent_image=latent, denoise=1.0)[0]
    assert all(s.shape[1] == 9 for s in inputs.seen) and torch.isfinite(out["samples"]).all()
    keep = (F.interpolate(latent["noise_mask"], size=(8, 8), mode="bilinear") == 0).expand(-1, 4, -1, -1)
    assert keep.any()
    torch.testing.assert_close(out["samples"][keep], latent["samples"][keep], rtol=0, atol=1e-5)


def test_inpaint_unet_falls_back_to_the_noise_mask_or_a_blank_image(ctx, inpaint):
    model, clip, vae = inpaint
    pixels, mask = image(64, 64, 4), torch.zeros(1, 64, 64)
    mask[:, 20:50, 10:30] = 1.0
    (latent,) = call(VAEEncodeForInpaint, ctx, pixels=pixels, vae=vae, mask=mask, grow_mask_by=6)
    pos, neg = call(TextEncode, ctx, text="a cat", clip=clip)[0], call(TextEncode, ctx, text="", clip=clip)[0]
    with Inputs(model.unet()) as inputs:
        call(KSampler, ctx, model=model, seed=1, steps=1, cfg=4.0, sampler_name="euler", scheduler="normal",
             positive=pos, negative=neg, latent_image=latent, denoise=1.0)
    seen = inputs.seen[0]
    noise_mask = F.interpolate(latent["noise_mask"], size=(8, 8), mode="bilinear").round()
    assert torch.equal(seen[:, 4:5], torch.cat([noise_mask] * 2))
    scaled = latent["samples"] * model.latent_format.scale_factor
    torch.testing.assert_close(seen[:, 5:], torch.cat([scaled] * 2), rtol=0, atol=1e-6)
    with Inputs(model.unet()) as inputs, torch.inference_mode():
        SDDenoiser(model, pos, [], 1.0, torch.zeros(1, 4, 8, 8))(torch.zeros(1, 4, 8, 8), 1.0)
    seen = inputs.seen[0]
    assert torch.equal(seen[:, 4], torch.ones(1, 8, 8))
    for channel, value in enumerate(BLANK_INPAINT):
        assert torch.equal(seen[:, 5 + channel], torch.full((1, 8, 8), value))


def test_ip2p_conditioning_and_unet_input(ctx, ip2p):
    model, clip, vae = ip2p
    pixels = image(69, 64, 5)
    pos, neg = call(TextEncode, ctx, text="make it red", clip=clip)[0], call(TextEncode, ctx, text="", clip=clip)[0]
    positive, negative, latent = call(InstructPixToPixConditioning, ctx, positive=pos, negative=neg, vae=vae,
                                      pixels=pixels)
    source = vae.encode(pixels[:, 2:66])
    assert torch.equal(positive[0][1]["concat_latent_image"], source)
    assert torch.equal(negative[0][1]["concat_latent_image"], source)
    assert torch.equal(latent["samples"], torch.zeros(1, 4, 8, 8)) and "noise_mask" not in latent
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    with Inputs(model.unet()) as inputs, torch.inference_mode():
        SDDenoiser(model, positive, negative, 5.0, latent["samples"])(x, 1.0)
        SDDenoiser(model, pos, [], 1.0, latent["samples"])(x, 1.0)
    with_image, without = inputs.seen
    assert with_image.shape == (2, 8, 8, 8)
    assert torch.equal(with_image[:, 4:], torch.cat([source, source])), "the VAE's latent, unscaled"
    assert torch.equal(without[:, 4:], torch.zeros(1, 4, 8, 8))
    out = call(KSampler, ctx, model=model, seed=1, steps=2, cfg=4.0, sampler_name="euler", scheduler="normal",
               positive=positive, negative=negative, latent_image=latent, denoise=1.0)[0]
    assert torch.isfinite(out["samples"]).all()
