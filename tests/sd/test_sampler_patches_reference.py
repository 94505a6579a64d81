"""sdgraph's sampler-level patch nodes against ComfyUI's own, run on the same toy UNet.

tests/sd/data/sampler_patches.npz holds, for each case of `sampler_patch_cases.py`, the latent ComfyUI a125cd8
sampled with its node classes (ModelSamplingDiscrete / ContinuousEDM / ContinuousV, RescaleCFG, CFGZeroStar, APG,
TCFG, DifferentialDiffusion, PerpNegGuider, DualCFGGuider) patching its real BaseModel + ModelPatcher around the toy
UNet of `toy_unet.py`, and `comfy.sample.sample` (or the guider's `sample`) doing the rest (made by
tools/comfy_reference/sampler_patches.py). Here sdgraph's nodes patch a DiffusionModel around the same toy and its
KSampler / SamplerCustomAdvanced sample the same seed: every hook, model sampling and the masked path run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import call, make_ctx  # noqa: E402
from cpu_references import References  # noqa: E402
from sampler_patch_cases import CASES, UNCHANGED  # noqa: E402
from toy_unet import LATENT_SHAPE, SEED, ToyUNet, toy_latent, toy_mask, toy_text  # noqa: E402

from sdgraph.nodes.sd.cfg_patches import APG, CFGZeroStar, DifferentialDiffusion, RescaleCFG, TCFG  # noqa: E402
from sdgraph.nodes.sd.custom_sampling import (DualCFGGuider, KSamplerSelect, RandomNoise,  # noqa: E402
                                              SamplerCustomAdvanced)
from sdgraph.nodes.sd.custom_sigmas import BasicScheduler  # noqa: E402
from sdgraph.nodes.sd.model_objects import DiffusionModel  # noqa: E402
from sdgraph.paths import Dirs  # noqa: E402
from sdgraph.nodes.sd.model_sampling_nodes import (ModelSamplingContinuousEDM,  # noqa: E402
                                                   ModelSamplingContinuousV, ModelSamplingDiscrete)
from sdgraph.nodes.sd.perp_neg import PerpNegGuider  # noqa: E402
from sdgraph.nodes.sd.sampling import KSampler  # noqa: E402

DATA = Path(__file__).parent / "data" / "sampler_patches.npz"
NODES = {cls.__name__: cls for cls in (ModelSamplingDiscrete, ModelSamplingContinuousEDM, ModelSamplingContinuousV,
                                       RescaleCFG, CFGZeroStar, APG, TCFG, DifferentialDiffusion, PerpNegGuider,
                                       DualCFGGuider)}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: Any, manager: Any) -> Any:
    """A node context without the tiny model tree (these tests need no model files)."""
    return make_ctx(Dirs(base=tmp_path_factory.mktemp("toy-home"), extra_model_roots=[]), manager)


@pytest.fixture(scope="module")
def reference() -> Any:
    return References(DATA)


@pytest.fixture(scope="module")
def toy_model(manager: Any) -> DiffusionModel:
    return DiffusionModel(slot=manager.manage(ToyUNet(), "toy-patches:unet", "unet"), name="toy")


def sample_case(case: dict[str, Any], model: DiffusionModel, ctx: Any) -> torch.Tensor:
    for name, inputs in case["patches"]:
        model = call(NODES[name], ctx, model=model, **inputs)[0]
    positive, negative, empty = ([[toy_text(seed), {}]] for seed in (1, 2, 3))
    if case["masked"]:
        latent = {"samples": toy_latent(), "noise_mask": toy_mask()}
    else:
        latent = {"samples": torch.zeros(LATENT_SHAPE)}
    if case["guider"] is None:
        out = call(KSampler, ctx, model=model, seed=SEED, steps=case["steps"], cfg=case["cfg"],
                   sampler_name=case["sampler"], scheduler=case["scheduler"], positive=positive, negative=negative,
                   latent_image=latent, denoise=case["denoise"])[0]
        return out["samples"]
    name, inputs = case["guider"]
    if name == "PerpNegGuider":
        guider = call(PerpNegGuider, ctx, model=model, positive=positive, negative=negative,
                      empty_conditioning=empty, **inputs)[0]
    else:
        guider = call(DualCFGGuider, ctx, model=model, cond1=positive, cond2=empty, negative=negative, **inputs)[0]
    sigmas = call(BasicScheduler, ctx, model=model, scheduler=case["scheduler"], steps=case["steps"],
                  denoise=case["denoise"])[0]
    out = call(SamplerCustomAdvanced, ctx, noise=call(RandomNoise, ctx, noise_seed=SEED)[0], guider=guider,
               sampler=call(KSamplerSelect, ctx, sampler_name=case["sampler"])[0], sigmas=sigmas,
               latent_image=latent)[0]
    return out["samples"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_patched_sampling_equals_comfyuis(name: str, reference: Any, toy_model: DiffusionModel, ctx: Any) -> None:
    ours = sample_case(CASES[name], toy_model, ctx)
    expected = torch.from_numpy(reference.closest(name, ours.numpy()))
    assert ours.shape == expected.shape and torch.isfinite(ours).all()
    scale = max(1.0, float(expected.abs().max()))
    assert float((ours - expected).abs().max()) <= 1e-4 * scale, name


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c["patches"]))
def test_each_patch_changes_sampling(name: str, reference: Any, toy_model: DiffusionModel, ctx: Any) -> None:
    """ComfyUI's patched result is not the unpatched one (so agreeing with it is agreeing on what the patch
    does), except for the cases that leave sampling as it is."""
    unpatched = sample_case({**CASES[name], "patches": []}, toy_model, ctx)
    gap = float((torch.from_numpy(reference[name]) - unpatched).abs().max())
    assert gap < 1e-4 if name in UNCHANGED else gap > 1e-2, (name, gap)
