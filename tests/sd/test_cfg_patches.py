"""The guidance patch nodes against their definitions, computed independently (float64, by hand) from the two
sides' own x0 estimates on the toy UNet."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import call, make_ctx  # noqa: E402
from toy_unet import ToyUNet, toy_text  # noqa: E402

from sdgraph.nodes.sd.cfg_patches import APG, TCFG, CFGZeroStar, RescaleCFG  # noqa: E402
from sdgraph.nodes.sd.denoiser import SDDenoiser  # noqa: E402
from sdgraph.nodes.sd.model_objects import DiffusionModel  # noqa: E402
from sdgraph.paths import Dirs  # noqa: E402

POS, NEG = [[toy_text(1), {}]], [[toy_text(2), {}]]
CFG = 6.0
SHAPE = (2, 4, 8, 8)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: Any, manager: Any) -> Any:
    return make_ctx(Dirs(base=tmp_path_factory.mktemp("toy-home"), extra_model_roots=[]), manager)


@pytest.fixture(scope="module")
def toy(manager: Any) -> DiffusionModel:
    return DiffusionModel(slot=manager.manage(ToyUNet(), "toy-cfg:unet", "unet"), name="toy")


def noisy(sigma: float, seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)) * sigma


def sides(model: DiffusionModel, x: torch.Tensor, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(cond x0, uncond x0) of the unpatched model, as float64 arrays."""
    with torch.inference_mode():
        return tuple(SDDenoiser(model, side, [], 1.0, x)(x, sigma).double().numpy() for side in (POS, NEG))


def patched(model: DiffusionModel, x: torch.Tensor, sigma: float, cfg: float = CFG) -> np.ndarray:
    with torch.inference_mode():
        return SDDenoiser(model, POS, NEG, cfg, x)(x, sigma).double().numpy()


def per_item(a: np.ndarray, fn: Any) -> np.ndarray:
    return np.stack([fn(item) for item in a])


# ---- RescaleCFG -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.4, 3.0, 14.0])
def test_rescale_cfg_moves_the_guided_v_to_the_conditional_std(toy: DiffusionModel, ctx: Any, sigma: float) -> None:
    x = noisy(sigma)
    cond, uncond = sides(toy, x, sigma)
    xs = x.double().numpy()
    alpha, sig = 1 / np.sqrt(1 + sigma ** 2), sigma / np.sqrt(1 + sigma ** 2)  # VP: x_vp = alpha x0 + sig eps
    v_of = lambda x0: alpha * (xs - x0) / sigma - sig * x0  # noqa: E731 - v = alpha eps - sig x0
    cond_v, uncond_v = v_of(cond), v_of(uncond)
    guided = uncond_v + CFG * (cond_v - uncond_v)
    ratio = per_item(cond_v, np.std) / per_item(guided, np.std)  # population std: the ratio is the same
    for multiplier in (1.0, 0.7):
        v = multiplier * guided * ratio[:, None, None, None] + (1 - multiplier) * guided
        expected = alpha * xs * alpha - sig * v  # x0 = alpha x_vp - sig v
        out = patched(call(RescaleCFG, ctx, model=toy, multiplier=multiplier)[0], x, sigma)
        np.testing.assert_allclose(out, expected, atol=2e-4 * max(1.0, np.abs(expected).max()))
    # multiplier 1: the guided v has exactly the conditional one's spread, item by item
    out_v = v_of(patched(call(RescaleCFG, ctx, model=toy, multiplier=1.0)[0], x, sigma))
    np.testing.assert_allclose(per_item(out_v, np.std), per_item(cond_v, np.std), rtol=1e-3)
    assert not np.allclose(per_item(guided, np.std), per_item(cond_v, np.std), rtol=1e-2)


def test_rescale_cfg_at_multiplier_0_is_plain_cfg(toy: DiffusionModel, ctx: Any) -> None:
    x = noisy(2.0, seed=1)
    cond, uncond = sides(toy, x, 2.0)
    out = patched(call(RescaleCFG, ctx, model=toy, multiplier=0.0)[0], x, 2.0)
    np.testing.assert_allclose(out, uncond + CFG * (cond - uncond), atol=1e-4)


# ---- CFG-Zero* ----------------------------------------------------------------------------------------------


def test_cfg_zero_star_scales_the_unconditional_by_its_optimal_projection(toy: DiffusionModel, ctx: Any) -> None:
    sigma = 5.0
    x = noisy(sigma, seed=2)
    cond, uncond = sides(toy, x, sigma)
    xs = x.double().numpy()
    expected = []
    for i in range(SHAPE[0]):
        c, u = (xs[i] - cond[i]).ravel(), (xs[i] - uncond[i]).ravel()  # the noise predictions
        alpha = c @ u / (u @ u + 1e-8)
        # cfg with the unconditional x0 replaced by alpha times itself
        expected.append(alpha * uncond[i] + CFG * (cond[i] - alpha * uncond[i]))
    out = patched(call(CFGZeroStar, ctx, model=toy)[0], x, sigma)
    np.testing.assert_allclose(out, np.stack(expected), atol=1e-4)


# ---- APG ----------------------------------------------------------------------------------------------------


def _apg_expected(cond: np.ndarray, uncond: np.ndarray, eta: float, threshold: float, guidance: np.ndarray
                  ) -> np.ndarray:
    out = []
    for i in range(cond.shape[0]):
        g = guidance[i]
        norm = np.linalg.norm(g)
        if threshold > 0:
            g = g * min(1.0, threshold / norm)
        unit = cond[i] / np.linalg.norm(cond[i])
        parallel = (g * unit).sum() * unit
        out.append(cond[i] + CFG * ((g - parallel) + eta * parallel))  # the cfg of APG's modified cond
    return np.stack(out)


def test_apg_projects_caps_and_carries_momentum(toy: DiffusionModel, ctx: Any) -> None:
    eta, threshold, momentum = 0.4, 1.5, 0.5
    model = call(APG, ctx, model=toy, eta=eta, norm_threshold=threshold, momentum=momentum)[0]
    x1, x2 = noisy(6.0, seed=3), noisy(2.0, seed=4)
    c1, u1 = sides(toy, x1, 6.0)
    c2, u2 = sides(toy, x2, 2.0)
    with torch.inference_mode():
        denoiser = SDDenoiser(model, POS, NEG, CFG, x1)
        first, second = denoiser(x1, 6.0).double().numpy(), denoiser(x2, 2.0).double().numpy()
    np.testing.assert_allclose(first, _apg_expected(c1, u1, eta, threshold, c1 - u1), atol=1e-4)
    running = momentum * (c1 - u1) + (c2 - u2)  # the guidance of step 2 with momentum, before the cap
    np.testing.assert_allclose(second, _apg_expected(c2, u2, eta, threshold, running), atol=1e-4)
    with torch.inference_mode():  # a higher sigma starts a new run: the momentum restarts
        restarted = denoiser(x1, 6.0).double().numpy()
    np.testing.assert_allclose(restarted, first, atol=1e-5)


def test_apg_without_cap_and_with_eta_1_is_cfg_plus_one(toy: DiffusionModel, ctx: Any) -> None:
    """eta 1, no cap, no momentum: APG's cond becomes uncond + guidance + guidance / cfg, so sampling guides at
    cond + cfg (cond - uncond) (ComfyUI's APG, not plain cfg)."""
    x = noisy(3.0, seed=5)
    cond, uncond = sides(toy, x, 3.0)
    out = patched(call(APG, ctx, model=toy, eta=1.0, norm_threshold=0.0, momentum=0.0)[0], x, 3.0)
    np.testing.assert_allclose(out, cond + CFG * (cond - uncond), atol=1e-4)


# ---- TCFG ---------------------------------------------------------------------------------------------------


def test_tcfg_keeps_the_unconditional_scores_component_on_the_principal_direction(toy: DiffusionModel,
                                                                                  ctx: Any) -> None:
    sigma = 4.0
    x = noisy(sigma, seed=6)
    cond, uncond = sides(toy, x, sigma)
    xs = x.double().numpy()
    expected = []
    for i in range(SHAPE[0]):
        u, c = (xs[i] - uncond[i]).ravel(), (xs[i] - cond[i]).ravel()
        scores = np.stack([u, c])
        # the first right singular vector: A^T w / |A^T w| for w the top eigenvector of the 2 x 2 Gram matrix
        _, vectors = np.linalg.eigh(scores @ scores.T)
        top = scores.T @ vectors[:, -1]
        top /= np.linalg.norm(top)
        damped_x0 = xs[i] - ((u @ top) * top).reshape(xs[i].shape)
        expected.append(damped_x0 + CFG * (cond[i] - damped_x0))
    out = patched(call(TCFG, ctx, model=toy)[0], x, sigma)
    np.testing.assert_allclose(out, np.stack(expected), atol=2e-4)


def test_tcfg_at_cfg_1_leaves_the_estimate_alone(toy: DiffusionModel, ctx: Any) -> None:
    x = noisy(4.0, seed=7)
    cond, _ = sides(toy, x, 4.0)
    np.testing.assert_allclose(patched(call(TCFG, ctx, model=toy)[0], x, 4.0, cfg=1.0), cond, atol=1e-5)


def test_patch_nodes_clone_and_refuse_what_is_not_a_model(toy: DiffusionModel, ctx: Any) -> None:
    patched_model = call(CFGZeroStar, ctx, model=toy)[0]
    assert patched_model is not toy and "sampler_post_cfg_function" not in toy.model_options
    with pytest.raises(ValueError, match="RescaleCFG.model"):
        call(RescaleCFG, ctx, model="not a model", multiplier=0.5)
