"""Sampling honours the MODEL's sampler-level options with ComfyUI's semantics: what each hook is given, that
what it returns is what sampling goes on with, the cfg-1 option, the UNet wrapper, calc_cond_batch for guidance
that re-runs the model, the denoise mask function, DualCFG and PerpNeg guiders; and, with no option set, the
denoiser computes exactly what it always has."""
from __future__ import annotations

import math
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import call, make_ctx  # noqa: E402
from toy_unet import ToyUNet, toy_latent, toy_mask, toy_output, toy_text  # noqa: E402

from sdgraph.nodes.sd import cfg_pipeline  # noqa: E402
from sdgraph.nodes.sd.cfg_patches import DifferentialDiffusion  # noqa: E402
from sdgraph.nodes.sd.cfg_pipeline import calc_cond_batch, levels  # noqa: E402
from sdgraph.nodes.sd.custom_sampling import DualCFGGuide  # noqa: E402
from sdgraph.nodes.sd.denoiser import SDDenoiser  # noqa: E402
from sdgraph.nodes.sd.model_objects import DiffusionModel  # noqa: E402
from sdgraph.paths import Dirs  # noqa: E402
from sdgraph.nodes.sd.perp_neg import PerpNegGuide  # noqa: E402
from sdgraph.nodes.sd.sampling import KSampler, plan_sigmas  # noqa: E402
from sdgraph.nodes.sd.schedules import schedule_of  # noqa: E402

POS, NEG, EMPTY = ([[toy_text(seed), {}]] for seed in (1, 2, 3))
SIGMA = 3.75  # a float32 value, as the schedules give them
CFG = 4.5
SHAPE = (2, 4, 8, 8)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: Any, manager: Any) -> Any:
    """A node context without the tiny model tree (these tests need no model files)."""
    return make_ctx(Dirs(base=tmp_path_factory.mktemp("toy-home"), extra_model_roots=[]), manager)


@pytest.fixture(scope="module")
def toy(manager: Any) -> DiffusionModel:
    return DiffusionModel(slot=manager.manage(ToyUNet(), "toy-hooks:unet", "unet"), name="toy")


def noisy(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)) * SIGMA


def x0_of(model: DiffusionModel, conditioning: list, x: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """One side's x0 estimate, from a denoiser of its own (no guidance, no hooks)."""
    plain = model.clone()
    plain.model_options = {"transformer_options": {}}
    with torch.inference_mode():
        return SDDenoiser(plain, conditioning, [], 1.0, x)(x, sigma)


def denoise(model: DiffusionModel, x: torch.Tensor, cfg: float = CFG, sigma: float = SIGMA, **kwargs: Any
            ) -> torch.Tensor:
    with torch.inference_mode():
        return SDDenoiser(model, POS, NEG, cfg, x, **kwargs)(x, sigma)


# ---- with no option set: the fast path, exactly as before -----------------------------------------------


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_unset_options_keep_the_batched_call_and_its_exact_arithmetic(toy: DiffusionModel, prediction: str) -> None:
    """The formulas the denoiser always used, written out: c_in, the nearest whole timestep, one [uncond; cond]
    call, lerp by cfg on the outputs, x0 from the output."""
    model = toy.clone()
    model.prediction_type = prediction
    x = noisy()
    c_in = 1.0 / math.sqrt(SIGMA * SIGMA + 1.0)
    t = float((torch.tensor(SIGMA, dtype=torch.float32).log() - schedule_of(model.alphas_cumprod).log_sigmas32)
              .abs().argmin())
    context = torch.cat([NEG[0][0].expand(2, -1, -1), POS[0][0].expand(2, -1, -1)])
    out = toy_output(torch.cat([x * c_in] * 2), torch.full((1,), t), context)
    uncond, cond = out.chunk(2)
    guided = torch.lerp(uncond, cond, CFG)
    if prediction == "epsilon":
        expected = torch.add(x, guided, alpha=-SIGMA)
    else:
        expected = torch.add(x * (c_in * c_in), guided, alpha=-SIGMA * c_in)
    calls = len(toy.slot.module.batches)
    assert torch.equal(denoise(model, x), expected)
    assert toy.slot.module.batches[calls:] == [4]  # one call, [uncond; cond] of a batch of 2


def test_unset_options_never_enter_the_hooked_pipeline(toy: DiffusionModel, monkeypatch: Any) -> None:
    monkeypatch.setattr("sdgraph.nodes.sd.denoiser.guided_prediction", lambda *a: pytest.fail("hooked path"))
    model = toy.clone()
    model.model_options["disable_cfg1_optimization"] = True  # not a hook: the fast path honours it
    denoise(model, noisy())


# ---- the hooks' arguments and results ---------------------------------------------------------------------


def test_cfg_function_gets_comfyuis_arguments_and_its_result_is_x_minus_it(toy: DiffusionModel) -> None:
    x = noisy()
    cond_x0, uncond_x0 = x0_of(toy, POS, x), x0_of(toy, NEG, x)
    seen: list[dict[str, Any]] = []

    def plain_cfg(args: dict[str, Any]) -> torch.Tensor:
        seen.append(args)
        return args["uncond"] + (args["cond"] - args["uncond"]) * args["cond_scale"]

    model = toy.clone()
    model.set_model_sampler_cfg_function(plain_cfg)
    out = denoise(model, x)
    args = seen[0]
    torch.testing.assert_close(args["cond"], x - cond_x0, atol=1e-5, rtol=0)  # noise-like: x - x0
    torch.testing.assert_close(args["uncond"], x - uncond_x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(args["cond_denoised"], cond_x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(args["uncond_denoised"], uncond_x0, atol=1e-5, rtol=0)
    assert args["input"] is not None and torch.equal(args["input"], x) and args["cond_scale"] == CFG
    assert args["sigma"].shape == (2,) and torch.all(args["sigma"] == SIGMA) and args["timestep"] is args["sigma"]
    assert isinstance(args["model"], SDDenoiser) and args["model_options"]["sampler_cfg_function"] is plain_cfg
    assert len(args["input_cond"]) == 1 and len(args["input_uncond"]) == 1
    torch.testing.assert_close(out, uncond_x0 + (cond_x0 - uncond_x0) * CFG, atol=1e-5, rtol=0)


def test_pre_cfg_functions_replace_conds_out_in_order(toy: DiffusionModel) -> None:
    x = noisy(1)
    cond_x0, uncond_x0 = x0_of(toy, POS, x), x0_of(toy, NEG, x)
    seen: list[dict[str, Any]] = []

    def swap(args: dict[str, Any]) -> list[torch.Tensor]:
        seen.append(args)
        return [args["conds_out"][1], args["conds_out"][0]]

    model = toy.clone()
    model.set_model_sampler_pre_cfg_function(swap)
    model.set_model_sampler_pre_cfg_function(lambda args: [args["conds_out"][0] + 1.0, args["conds_out"][1]])
    out = denoise(model, x)
    args = seen[0]
    assert set(args) == {"conds", "conds_out", "cond_scale", "timestep", "input", "sigma", "model", "model_options"}
    assert len(args["conds"]) == 2 and len(args["conds_out"]) == 2 and args["cond_scale"] == CFG
    torch.testing.assert_close(args["conds_out"][0], cond_x0, atol=1e-5, rtol=0)
    # swapped, then the new "cond" (the negative's estimate) raised by 1
    torch.testing.assert_close(out, cond_x0 + (uncond_x0 + 1.0 - cond_x0) * CFG, atol=1e-4, rtol=0)


def test_post_cfg_functions_chain_on_the_guided_estimate(toy: DiffusionModel) -> None:
    x = noisy(2)
    cond_x0, uncond_x0 = x0_of(toy, POS, x), x0_of(toy, NEG, x)
    seen: list[dict[str, Any]] = []

    def first(args: dict[str, Any]) -> torch.Tensor:
        seen.append(args)
        return args["denoised"] + 1.0

    model = toy.clone()
    model.set_model_sampler_post_cfg_function(first)
    model.set_model_sampler_post_cfg_function(lambda args: args["denoised"] * 2.0)
    out = denoise(model, x)
    args = seen[0]
    assert set(args) == {"denoised", "cond", "uncond", "cond_scale", "model", "uncond_denoised", "cond_denoised",
                         "sigma", "model_options", "input"}
    guided = uncond_x0 + (cond_x0 - uncond_x0) * CFG
    torch.testing.assert_close(args["denoised"], guided, atol=1e-4, rtol=0)
    torch.testing.assert_close(out, (guided + 1.0) * 2.0, atol=1e-4, rtol=0)
    assert args["cond"][0].context.shape == POS[0][0].shape  # the prepared entries: what calc_cond_batch takes


def test_the_unet_function_wrapper_wraps_each_call(toy: DiffusionModel) -> None:
    x = noisy(3)
    plain = denoise(toy, x)
    seen: list[dict[str, Any]] = []

    def halve(apply_model: Any, args: dict[str, Any]) -> torch.Tensor:
        seen.append(args)
        return apply_model(args["input"], args["timestep"], **args["c"]) * 0.5

    model = toy.clone()
    model.set_model_unet_function_wrapper(halve)
    out = denoise(model, x)
    args = seen[0]
    assert len(seen) == 1 and args["cond_or_uncond"] == [1, 0]  # [uncond; cond] in one call, as ComfyUI stacks
    assert torch.equal(args["input"], torch.cat([x, x])) and torch.all(args["timestep"] == SIGMA)
    assert args["timestep"].shape == (4,)
    assert set(args["c"]) == {"c_crossattn", "control", "added_cond_kwargs", "transformer_options"}
    assert args["c"]["transformer_options"]["cond_or_uncond"] == [1, 0]
    assert torch.equal(args["c"]["c_crossattn"][2:], POS[0][0].expand(2, -1, -1))
    torch.testing.assert_close(out, plain * 0.5, atol=1e-5, rtol=0)  # guidance is linear in the estimates


def _wrapper_chunks(model: DiffusionModel, x: torch.Tensor, cfg: float, **kwargs: Any) -> list[list[int]]:
    chunks: list[list[int]] = []

    def record(apply_model: Any, args: dict[str, Any]) -> torch.Tensor:
        chunks.append(args["cond_or_uncond"])
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(record)
    denoise(model, x, cfg=cfg, **kwargs)
    return chunks


def test_cfg_1_skips_the_negative_unless_the_optimisation_is_disabled(toy: DiffusionModel) -> None:
    x = noisy(4)
    assert _wrapper_chunks(toy.clone(), x, 1.0) == [[0]]
    seen: list[dict[str, Any]] = []
    model = toy.clone()
    model.set_model_sampler_post_cfg_function(lambda a: seen.append(a) or a["denoised"], disable_cfg1_optimization=True)
    assert _wrapper_chunks(model, x, 1.0) == [[1, 0]]
    torch.testing.assert_close(seen[0]["uncond_denoised"], x0_of(toy, NEG, x), atol=1e-5, rtol=0)
    assert seen[0]["uncond"] is not None
    # a CFG++ sampler (keep_uncond) needs the negative as well
    assert _wrapper_chunks(toy.clone(), x, 1.0, keep_uncond=True) == [[1, 0]]


def test_disabling_the_cfg1_optimisation_alone_runs_the_negative_and_changes_nothing(toy: DiffusionModel) -> None:
    x = noisy(5)
    model = toy.clone()
    model.model_options["disable_cfg1_optimization"] = True
    calls = len(toy.slot.module.batches)
    assert torch.equal(denoise(model, x, cfg=1.0), denoise(toy, x, cfg=1.0))
    assert toy.slot.module.batches[calls:] == [4, 2]  # [uncond; cond], then the positive alone


def test_calc_cond_batch_reevaluates_a_cond_with_changed_options(toy: DiffusionModel) -> None:
    """What perturbed-attention / self-attention guidance do from a post-cfg function: run the model again on
    one cond with their own options."""
    x = noisy(6)
    found: dict[str, torch.Tensor] = {}

    def again(args: dict[str, Any]) -> torch.Tensor:
        model, options = args["model"], dict(args["model_options"])
        (found["same"],) = calc_cond_batch(model, [args["cond"]], args["input"], args["sigma"], options)
        options["model_function_wrapper"] = lambda apply, a: apply(a["input"] * 0.0, a["timestep"], **a["c"])
        (found["zero_input"],) = calc_cond_batch(model, [args["cond"]], args["input"], args["sigma"], options)
        found["cond"] = args["cond_denoised"]
        return args["denoised"]

    model = toy.clone()
    model.set_model_sampler_post_cfg_function(again)
    denoise(model, x)
    torch.testing.assert_close(found["same"], found["cond"], atol=1e-6, rtol=0)
    torch.testing.assert_close(found["zero_input"], x0_of(toy, POS, torch.zeros_like(x)), atol=1e-5, rtol=0)


def test_areas_go_through_calc_cond_batch_one_call_per_entry(toy: DiffusionModel) -> None:
    """Entries with an area are evaluated on their crop; the cond's estimate is their weighted average and zero
    where no entry is (ComfyUI's), the guidance of the unhooked path where entries cover everything."""
    x = noisy(7)
    left = [[toy_text(1), {"area": (8, 4, 0, 0), "strength": 1.0}], [toy_text(4), {"area": (8, 8, 0, 0),
                                                                                    "strength": 3.0}]]
    chunks: list[list[int]] = []
    model = toy.clone()
    model.set_model_unet_function_wrapper(lambda apply, a: chunks.append(a["cond_or_uncond"]) or
                                          apply(a["input"], a["timestep"], **a["c"]))
    with torch.inference_mode():
        hooked = SDDenoiser(model, left, NEG, CFG, x)(x, SIGMA)
        plain = SDDenoiser(toy, left, NEG, CFG, x)(x, SIGMA)
    assert chunks == [[0], [0], [1], [1], [1]]  # the negative also gets a twin of each area entry (ComfyUI's)
    torch.testing.assert_close(hooked, plain, atol=1e-4, rtol=0)


class ResidualUNet(ToyUNet):
    """The toy UNet plus a ControlNet-style mid-block residual (its mean per item), when one is given."""

    def forward(self, x_in: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor,
                return_dict: bool = True, mid_block_additional_residual: Any = None, **kw: Any) -> Any:
        out = super().forward(x_in, t, encoder_hidden_states)[0]
        if mid_block_additional_residual is not None:
            out = out + mid_block_additional_residual.mean(dim=(1, 2, 3), keepdim=True)
        return (out,)


def test_control_residuals_reach_the_unet_on_the_hooked_path_as_on_the_fast_one(manager: Any,
                                                                                monkeypatch: Any) -> None:
    """A stand-in for ControlNet: a residual made from the scaled input, the timestep and the step's percent, on
    the positive entry only."""
    seen: list[tuple[float, float]] = []

    def residuals(hint: Any, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, percent: float,
                  **_: Any) -> dict[str, Any]:
        seen.append((float(t.flatten()[0]), percent))
        return {"mid_block_additional_residual": x * (1.0 + percent) + float(t.flatten()[0]) / 1000.0}

    monkeypatch.setattr("sdgraph.nodes.sd.control.control_residuals", residuals)
    model = DiffusionModel(slot=manager.manage(ResidualUNet(), "toy-control:unet", "unet"), name="toy-control")
    positive = [[toy_text(1), {"control": "a hint"}]]
    x = noisy(11)
    with torch.inference_mode():
        fast = SDDenoiser(model, positive, NEG, CFG, x)(x, SIGMA)
        hooked_model = model.clone()
        controls: list[dict[str, Any]] = []
        hooked_model.set_model_unet_function_wrapper(lambda apply, a: controls.append(a["c"]["control"]) or
                                                     apply(a["input"], a["timestep"], **a["c"]))
        hooked = SDDenoiser(hooked_model, positive, NEG, CFG, x)(x, SIGMA)
    assert seen[0] == seen[1] and 0.0 < seen[0][1] < 1.0
    residual = controls[0]["mid_block_additional_residual"]
    assert residual.shape[0] == 4 and torch.equal(residual[:2], torch.zeros_like(residual[:2]))  # uncond: none
    torch.testing.assert_close(hooked, fast, atol=1e-5, rtol=0)
    assert float((fast - SDDenoiser(model, [[toy_text(1), {}]], NEG, CFG, x)(x, SIGMA)).abs().max()) > 1e-2


# ---- the denoise mask function (the masked sampling path) ------------------------------------------------


def test_denoise_mask_function_gets_the_level_the_mask_and_the_runs_sigmas(toy: DiffusionModel, ctx: Any) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]] = []

    def keep_everything(sigma: torch.Tensor, mask: torch.Tensor, extra_options: dict[str, Any]) -> torch.Tensor:
        seen.append((sigma, mask, extra_options))
        return torch.zeros_like(mask)

    model = toy.clone()
    model.set_model_denoise_mask_function(keep_everything)
    latent = {"samples": toy_latent(), "noise_mask": toy_mask()}
    out = call(KSampler, ctx, model=model, seed=3, steps=4, cfg=CFG, sampler_name="euler", scheduler="karras",
               positive=POS, negative=NEG, latent_image=latent, denoise=1.0)[0]["samples"]
    sigmas = plan_sigmas(model, "karras", 4).sigmas
    assert [float(s[0]) for s, _, _ in seen] == pytest.approx(sigmas[:-1].tolist())
    assert all(s.shape == (2,) and m.shape[-2:] == (8, 8) for s, m, _ in seen)
    assert torch.equal(seen[0][2]["sigmas"].double(), sigmas)
    assert seen[0][2]["model"].inner_model.model_sampling.sigma_max == model.model_sampling.sigma_max
    torch.testing.assert_close(out, latent["samples"], atol=1e-5, rtol=0)  # its all-zero mask kept the latent


def test_differential_diffusion_regenerates_where_the_mask_reaches_each_steps_progress(toy: DiffusionModel,
                                                                                        ctx: Any) -> None:
    model = call(DifferentialDiffusion, ctx, model=toy, strength=1.0)[0]
    masks: list[torch.Tensor] = []
    inner = model.model_options["denoise_mask_function"]
    model.model_options["denoise_mask_function"] = lambda *a, **k: masks.append(inner(*a, **k)) or masks[-1]
    latent = {"samples": toy_latent(), "noise_mask": toy_mask()}
    call(KSampler, ctx, model=model, seed=3, steps=5, cfg=CFG, sampler_name="euler", scheduler="normal",
         positive=POS, negative=NEG, latent_image=latent, denoise=0.6)
    sigmas = plan_sigmas(model, "normal", 5, denoise=0.6).sigmas.tolist()
    log_sigmas = schedule_of(model.alphas_cumprod).sigmas.log()

    def step(sigma: float) -> int:  # the training timestep nearest in log-sigma
        return int((math.log(sigma) - log_sigmas).abs().argmin())

    first, last = step(sigmas[0]), 0  # the run ends at 0: the model's sigma_min (timestep 0) is the floor
    ramp = toy_mask()
    assert len(masks) == 5
    for sigma, mask in zip(sigmas, masks):
        threshold = (step(sigma) - last) / (first - last)
        assert torch.equal(mask, (ramp >= threshold).float()), sigma
    assert masks[0].sum() < masks[-1].sum()  # the regenerated region grows as the steps go


@pytest.mark.parametrize("end", [None, 4])
def test_differential_diffusion_threshold_is_the_timestep_progress(toy: DiffusionModel, ctx: Any,
                                                                   end: int | None) -> None:
    """Mask values just under / at / over each step's threshold (current - last) / (first - last), the last
    timestep that of the run's final sigma when it is above the model's sigma_min (a run left noisy)."""
    function = call(DifferentialDiffusion, ctx, model=toy, strength=1.0)[0].model_options["denoise_mask_function"]
    sigmas = plan_sigmas(toy, "karras", 7).sigmas.float()[:end]
    log_sigmas = schedule_of(toy.alphas_cumprod).sigmas.log()
    nearest = lambda sigma: int((math.log(float(sigma)) - log_sigmas).abs().argmin())  # noqa: E731
    first, last = nearest(sigmas[0]), (0 if end is None else nearest(sigmas[-1]))
    for sigma in sigmas[:-1]:
        tau = (nearest(sigma) - last) / (first - last)
        probe = torch.tensor([tau - 1e-4, tau, tau + 1e-4], dtype=torch.float32).view(1, 1, 1, 3)
        out = function(sigma.repeat(2), probe, extra_options={"model": _Inner(toy.model_sampling), "sigmas": sigmas})
        assert out.flatten().tolist() == [0.0, 1.0, 1.0], float(sigma)


def test_differential_diffusion_strength_blends_the_step_mask_with_the_soft_one(toy: DiffusionModel,
                                                                                ctx: Any) -> None:
    function = call(DifferentialDiffusion, ctx, model=toy, strength=0.25)[0].model_options["denoise_mask_function"]
    ms = toy.model_sampling
    sigmas = torch.tensor([float(ms.sigma(torch.tensor(600.0))), 1.0, 0.0])
    ramp = toy_mask()
    out = function(sigmas[:1].repeat(2), ramp, extra_options={"model": _Inner(ms), "sigmas": sigmas})
    binary = (ramp >= 1.0).float()  # the first step: threshold 1
    torch.testing.assert_close(out, 0.25 * binary + 0.75 * ramp)


class _Inner:
    def __init__(self, ms: Any) -> None:
        self.model_sampling = ms
        self.inner_model = self


# ---- guiders built on the pipeline -----------------------------------------------------------------------


@pytest.mark.parametrize("nested", [False, True])
def test_dual_cfg_with_hooks_is_comfyuis_rule_on_the_same_estimates(toy: DiffusionModel, nested: bool) -> None:
    x = noisy(8)
    guide = DualCFGGuide(toy, POS, EMPTY, NEG, 3.0, 2.0, nested)
    with torch.inference_mode():
        unhooked = guide.denoiser(x, None)(x, SIGMA)
    model = toy.clone()
    model.set_model_unet_function_wrapper(lambda apply, a: apply(a["input"], a["timestep"], **a["c"]))
    with torch.inference_mode():
        hooked = DualCFGGuide(model, POS, EMPTY, NEG, 3.0, 2.0, nested).denoiser(x, None)(x, SIGMA)
    torch.testing.assert_close(hooked, unhooked, atol=1e-4, rtol=0)


def test_perp_neg_is_the_perpendicular_negative_from_the_empty_prediction(toy: DiffusionModel) -> None:
    x = noisy(9)
    p, n, e = (x0_of(toy, side, x).double() for side in (POS, NEG, EMPTY))
    d_p, d_n = p - e, n - e
    perp = d_n - (d_n * d_p).sum() / (d_p * d_p).sum() * d_p
    expected = e + CFG * (d_p - 1.3 * perp)
    with torch.inference_mode():
        out, negative = PerpNegGuide(toy, POS, NEG, EMPTY, CFG, 1.3).denoiser(x, None).with_uncond(x, SIGMA)
    torch.testing.assert_close(out.double(), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(negative.double(), n, atol=1e-5, rtol=0)


def test_perp_neg_skips_the_sides_its_scales_make_unneeded(toy: DiffusionModel) -> None:
    x = noisy(10)
    model = toy.clone()
    chunks: list[list[int]] = []
    model.set_model_unet_function_wrapper(lambda apply, a: chunks.append(a["cond_or_uncond"]) or
                                          apply(a["input"], a["timestep"], **a["c"]))
    with torch.inference_mode():
        out = PerpNegGuide(model, POS, NEG, EMPTY, 1.0, 0.0).denoiser(x, None)(x, SIGMA)
        PerpNegGuide(model, POS, NEG, EMPTY, 2.0, 0.0).denoiser(x, None)(x, SIGMA)
    assert chunks == [[0], [2, 0]]
    torch.testing.assert_close(out, x0_of(toy, POS, x), atol=1e-5, rtol=0)


def test_levels_are_one_sigma_per_item() -> None:
    x = torch.zeros(3, 4, 2, 2)
    assert torch.equal(levels(x, 2.5), torch.full((3,), 2.5))
    assert not cfg_pipeline.sampler_hooks_set({"transformer_options": {}, "sampler_post_cfg_function": []})
