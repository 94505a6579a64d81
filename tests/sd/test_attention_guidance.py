"""What PerturbedAttentionGuidance and SelfAttentionGuidance mean, on the tiny UNet of `attention_toy.py` and on
small tensors (their agreement with ComfyUI is tests/sd/test_attention_guidance_reference.py)."""
from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from attention_toy import HEADS, SEED, attention_unet, toy_text  # noqa: E402
from conftest import call, make_ctx  # noqa: E402

from sdgraph.nodes.sd.attention_guidance import (AttentionRecorder, PerturbedAttentionGuidance,  # noqa: E402
                                                 SelfAttentionGuidance, attended_mask, attention_grid,
                                                 gaussian_blur)
from sdgraph.nodes.sd.custom_sampling import (BasicGuider, KSamplerSelect, RandomNoise,  # noqa: E402
                                              SamplerCustomAdvanced)
from sdgraph.nodes.sd.custom_sigmas import BasicScheduler  # noqa: E402
from sdgraph.nodes.sd.model_objects import DiffusionModel  # noqa: E402
from sdgraph.nodes.sd.model_patcher import set_model_options_patch_replace  # noqa: E402
from sdgraph.nodes.sd.model_sampling_nodes import ModelSamplingDiscrete  # noqa: E402
from sdgraph.nodes.sd.sampling import KSampler  # noqa: E402
from sdgraph.paths import Dirs  # noqa: E402

POSITIVE, NEGATIVE = [[toy_text(1), {}]], [[toy_text(2), {}]]
# One step's x0 estimate computed along another float path (a batch of one, bmm in place of SDPA): ~4e-6 apart
# here. Every effect asserted is above 0.05.
ROUNDING = 1e-5


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: Any, manager: Any) -> Any:
    return make_ctx(Dirs(base=tmp_path_factory.mktemp("attention-guidance-home"), extra_model_roots=[]), manager)


def _model(manager: Any, ctx: Any, middle: bool = True) -> Any:
    unet = attention_unet(middle=middle)
    model = DiffusionModel(slot=manager.manage(unet, f"attention-guidance:{middle}", "unet"), name="toy")
    return call(ModelSamplingDiscrete, ctx, model=model, sampling="x0", zsnr=False)[0]


@pytest.fixture(scope="module")
def toy(manager: Any, ctx: Any) -> Any:
    return _model(manager, ctx)


@pytest.fixture(scope="module")
def toy_without_middle(manager: Any, ctx: Any) -> Any:
    return _model(manager, ctx, middle=False)


def sample(model: Any, ctx: Any, cfg: float = 5.0, shape: tuple[int, ...] = (1, 4, 16, 16),
           steps: int = 4) -> torch.Tensor:
    """KSampler's latent; with steps=1 it is the denoised estimate at sigma_max, where equalities are not blurred
    by the sampling's amplification of float rounding (~2e-5 after 4 steps on this toy)."""
    return call(KSampler, ctx, model=model, seed=SEED, steps=steps, cfg=cfg, sampler_name="euler", scheduler="karras",
                positive=POSITIVE, negative=NEGATIVE, latent_image={"samples": torch.zeros(shape)},
                denoise=1.0)[0]["samples"]


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def hooked(model: Any) -> Any:
    """The model with a post-cfg function and an attention replacement (for no block) that change nothing: it
    samples through the same hooked pipeline and UNet walk as the guided models."""
    out = model.clone()
    out.set_model_sampler_post_cfg_function(lambda args: args["denoised"], disable_cfg1_optimization=True)
    out.set_model_attn1_replace(lambda q, k, v, extra: None, "nowhere", 0)
    return out


# ---- both -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("node, inputs", [(PerturbedAttentionGuidance, {"scale": 0.0}),
                                          (SelfAttentionGuidance, {"scale": 0.0, "blur_sigma": 2.0}),
                                          (SelfAttentionGuidance, {"scale": 1.0, "blur_sigma": 0.0})])
def test_zero_scale_or_no_blur_samples_as_unpatched(node: Any, inputs: dict, toy: Any, ctx: Any) -> None:
    patched = call(node, ctx, model=toy, **inputs)[0]
    assert _gap(sample(patched, ctx, steps=1), sample(hooked(toy), ctx, steps=1)) < ROUNDING


@pytest.mark.parametrize("node, inputs", [(PerturbedAttentionGuidance, {"scale": 3.0}),
                                          (SelfAttentionGuidance, {"scale": 1.0, "blur_sigma": 2.0})])
def test_patching_leaves_the_input_model_alone(node: Any, inputs: dict, toy: Any, ctx: Any) -> None:
    before = sample(toy, ctx)
    patched = call(node, ctx, model=toy, **inputs)[0]
    assert _gap(sample(patched, ctx), before) > 0.05
    assert toy.model_options == {"transformer_options": {}} and _gap(sample(toy, ctx), before) == 0


def test_bad_model_input_is_named() -> None:
    with pytest.raises(ValueError, match="PerturbedAttentionGuidance.model"):
        PerturbedAttentionGuidance().run(model="not a model", scale=1.0)


# ---- PAG --------------------------------------------------------------------------------------------------


def test_pag_acts_through_the_middle_blocks_self_attention_only(toy: Any, toy_without_middle: Any,
                                                                ctx: Any) -> None:
    """Without a middle block the perturbed pass is the conditional pass: PAG adds nothing; with one it steers."""
    pag = {"scale": 3.0}
    assert _gap(sample(call(PerturbedAttentionGuidance, ctx, model=toy_without_middle, **pag)[0], ctx, steps=1),
                sample(hooked(toy_without_middle), ctx, steps=1)) < ROUNDING
    assert _gap(sample(call(PerturbedAttentionGuidance, ctx, model=toy, **pag)[0], ctx, steps=1),
                sample(hooked(toy), ctx, steps=1)) > 0.05


def test_pag_grows_with_its_scale(toy: Any, ctx: Any) -> None:
    """One step from pure noise moves the guided x0 by scale * (cond - perturbed): linear in the scale."""
    base = call(KSampler, ctx, model=toy, seed=SEED, steps=1, cfg=5.0, sampler_name="euler", scheduler="karras",
                positive=POSITIVE, negative=NEGATIVE, latent_image={"samples": torch.zeros(1, 4, 16, 16)},
                denoise=1.0)[0]["samples"]
    moved = []
    for scale in (1.0, 2.0):
        model = call(PerturbedAttentionGuidance, ctx, model=toy, scale=scale)[0]
        moved.append(call(KSampler, ctx, model=model, seed=SEED, steps=1, cfg=5.0, sampler_name="euler",
                          scheduler="karras", positive=POSITIVE, negative=NEGATIVE,
                          latent_image={"samples": torch.zeros(1, 4, 16, 16)}, denoise=1.0)[0]["samples"] - base)
    assert float(moved[0].abs().max()) > 0.05
    assert torch.allclose(moved[1], 2 * moved[0], atol=1e-5)


def test_patch_replace_copies_what_it_changes() -> None:
    first, second = object(), object()
    options = {"transformer_options": {"patches_replace": {"attn1": {("input", 1): first}}}, "other": 1}
    copied = set_model_options_patch_replace(dict(options), second, "attn1", "middle", 0)
    assert copied["transformer_options"]["patches_replace"]["attn1"] == {("input", 1): first, ("middle", 0): second}
    assert options["transformer_options"]["patches_replace"]["attn1"] == {("input", 1): first}
    assert set_model_options_patch_replace({}, second, "attn2", "output", 3, 1)["transformer_options"] == {
        "patches_replace": {"attn2": {("output", 3, 1): second}}}


# ---- SAG --------------------------------------------------------------------------------------------------


def test_sag_runs_the_negative_at_cfg1(toy: Any, ctx: Any) -> None:
    """At cfg 1 the unconditional side is evaluated anyway, and SAG steers with it."""
    sag = call(SelfAttentionGuidance, ctx, model=toy, scale=1.0, blur_sigma=2.0)[0]
    assert sag.model_options["disable_cfg1_optimization"] is True
    assert _gap(sample(sag, ctx, cfg=1.0), sample(toy, ctx, cfg=1.0)) > 0.05


def test_sag_without_a_negative_says_so(toy: Any, ctx: Any) -> None:
    """ComfyUI fails here too (AttributeError: nothing was recorded); sdgraph names the node and the cause."""
    sag = call(SelfAttentionGuidance, ctx, model=toy, scale=0.5, blur_sigma=2.0)[0]
    guider = call(BasicGuider, ctx, model=sag, conditioning=POSITIVE)[0]
    sigmas = call(BasicScheduler, ctx, model=sag, scheduler="karras", steps=3, denoise=1.0)[0]
    with pytest.raises(Exception, match="SelfAttentionGuidance: .*no unconditional"):
        call(SamplerCustomAdvanced, ctx, noise=call(RandomNoise, ctx, noise_seed=SEED)[0], guider=guider,
             sampler=call(KSamplerSelect, ctx, sampler_name="euler")[0], sigmas=sigmas,
             latent_image={"samples": torch.zeros(1, 4, 16, 16)})


def test_sag_leaves_latents_too_small_to_blur(toy: Any, ctx: Any) -> None:
    sag = call(SelfAttentionGuidance, ctx, model=toy, scale=2.0, blur_sigma=2.0)[0]
    shape = (1, 4, 16, 4)
    assert _gap(sample(sag, ctx, shape=shape, steps=1), sample(hooked(toy), ctx, shape=shape, steps=1)) < ROUNDING


def test_recorder_keeps_the_unconditional_chunk() -> None:
    recorder = AttentionRecorder()
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 6, 2 * 3, generator=generator) for _ in range(3))  # [uncond x2; cond x2], 2 heads
    out = recorder(q, k, v, {"n_heads": 2, "cond_or_uncond": [1, 0]})
    probs = recorder.take()
    expected = torch.softmax(q.reshape(4, 6, 2, 3).transpose(1, 2) @ k.reshape(4, 6, 2, 3).permute(0, 2, 3, 1)
                             / 3 ** 0.5, dim=-1)
    assert probs.shape == (2 * 2, 6, 6) and torch.allclose(probs, expected[:2].reshape(4, 6, 6), atol=1e-6)
    plain = torch.nn.functional.scaled_dot_product_attention(*(t.reshape(4, 6, 2, 3).transpose(1, 2) for t in (q, k, v)))
    assert torch.allclose(out, plain.transpose(1, 2).reshape(4, 6, 6), atol=1e-6)
    recorder(q[2:], k[2:], v[2:], {"n_heads": 2, "cond_or_uncond": [0]})
    assert recorder.take() is None  # a conditional-only pass records nothing


def test_blur_kernel_is_the_normalised_9x9_gaussian() -> None:
    image = torch.zeros(1, 2, 11, 11)
    image[:, :, 5, 5] = 1.0
    taps = torch.exp(-0.5 * (torch.arange(-4.0, 5.0) / 1.5) ** 2)
    kernel = torch.outer(taps, taps) / taps.sum() ** 2
    blurred = gaussian_blur(image, 1.5)
    assert torch.allclose(blurred[0, 1, 1:10, 1:10], kernel, atol=1e-7)
    assert torch.allclose(gaussian_blur(torch.full((1, 1, 6, 6), 3.0), 4.0), torch.full((1, 1, 6, 6), 3.0))
    ramp = torch.arange(8.0).repeat(8, 1).reshape(1, 1, 8, 8)
    assert float(gaussian_blur(ramp, 2.0)[0, 0, 0, 0]) > 0  # reflect padding: the edge sees mirrored values


def test_mask_marks_positions_attended_more_than_an_even_share() -> None:
    """Probabilities [B * heads, queries, keys]: a key whose column sum, averaged over heads, exceeds 1 is blurred;
    the keys' grid (2 x 3 under a 4 x 6 latent) is upsampled by nearest neighbour."""
    probs = torch.full((1 * HEADS, 6, 6), 1 / 6)
    probs[:, :, 4] += 0.1 / 6
    probs[:, :, 1] -= 0.1 / 6
    mask = attended_mask(probs, 1, 4, 6)
    expected = torch.zeros(2, 3)
    expected[1, 1] = 1.0
    assert torch.equal(mask[0, 0], expected.repeat_interleave(2, 0).repeat_interleave(2, 1))


def test_attention_grid_follows_the_latents_aspect() -> None:
    assert attention_grid(64, 16, 16) == (8, 8)
    assert attention_grid(96, 16, 24) == (8, 12)
    assert attention_grid(6, 4, 6) == (2, 3)
    with pytest.raises(ValueError, match="SelfAttentionGuidance: .*3 positions"):
        attention_grid(3, 8, 8)
