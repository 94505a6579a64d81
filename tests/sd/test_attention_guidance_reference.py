"""sdgraph's PerturbedAttentionGuidance and SelfAttentionGuidance against ComfyUI's own, on the same tiny UNet.

tests/sd/data/attention_guidance.npz holds, for each case of `attention_toy.CASES`, the latent ComfyUI a125cd8
sampled with its node classes patching its real BaseModel + ModelPatcher around its own UNetModel loaded with the
toy's weights (made by tools/comfy_reference/attention_guidance.py). Here sdgraph's nodes patch a DiffusionModel
around the diffusers module those weights came from, so the attention replacements go through sdgraph's UNet
walk, and its KSampler / SamplerCustomAdvanced sample the same seed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from attention_toy import CASES, SEED, attention_unet, toy_text  # noqa: E402
from conftest import call, make_ctx  # noqa: E402

from sdgraph.nodes.sd.attention_guidance import PerturbedAttentionGuidance, SelfAttentionGuidance  # noqa: E402
from sdgraph.nodes.sd.custom_sampling import (BasicGuider, KSamplerSelect, RandomNoise,  # noqa: E402
                                              SamplerCustomAdvanced)
from sdgraph.nodes.sd.custom_sigmas import BasicScheduler  # noqa: E402
from sdgraph.nodes.sd.model_objects import DiffusionModel  # noqa: E402
from sdgraph.nodes.sd.model_sampling_nodes import ModelSamplingDiscrete  # noqa: E402
from sdgraph.nodes.sd.sampling import KSampler  # noqa: E402
from sdgraph.paths import Dirs  # noqa: E402

DATA = Path(__file__).parent / "data" / "attention_guidance.npz"
NODES = {cls.__name__: cls for cls in (PerturbedAttentionGuidance, SelfAttentionGuidance, ModelSamplingDiscrete)}
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: Any, manager: Any) -> Any:
    return make_ctx(Dirs(base=tmp_path_factory.mktemp("attention-toy-home"), extra_model_roots=[]), manager)


@pytest.fixture(scope="module")
def reference() -> Any:
    return np.load(DATA)


@pytest.fixture(scope="module")
def toy_model(manager: Any) -> DiffusionModel:
    return DiffusionModel(slot=manager.manage(attention_unet(), "attention-toy:unet", "unet"), name="attention-toy")


def sample_case(case: dict[str, Any], model: DiffusionModel, ctx: Any) -> torch.Tensor:
    for name, inputs in case["patches"]:
        model = call(NODES[name], ctx, model=model, **inputs)[0]
    positive, negative = ([[toy_text(seed), {}]] for seed in (1, 2))
    latent = {"samples": torch.zeros(case["shape"])}
    if case["guider"] is None:
        return call(KSampler, ctx, model=model, seed=SEED, steps=case["steps"], cfg=case["cfg"],
                    sampler_name=case["sampler"], scheduler=case["scheduler"], positive=positive, negative=negative,
                    latent_image=latent, denoise=1.0)[0]["samples"]
    guider = call(BasicGuider, ctx, model=model, conditioning=positive)[0]
    sigmas = call(BasicScheduler, ctx, model=model, scheduler=case["scheduler"], steps=case["steps"], denoise=1.0)[0]
    return call(SamplerCustomAdvanced, ctx, noise=call(RandomNoise, ctx, noise_seed=SEED)[0], guider=guider,
                sampler=call(KSamplerSelect, ctx, sampler_name=case["sampler"])[0], sigmas=sigmas,
                latent_image=latent)[0]["samples"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_guided_sampling_equals_comfyuis(name: str, reference: Any, toy_model: DiffusionModel, ctx: Any) -> None:
    expected = torch.from_numpy(reference[name])
    ours = sample_case(CASES[name], toy_model, ctx)
    assert ours.shape == expected.shape and torch.isfinite(ours).all()
    diff = float((ours - expected).abs().max())
    print(f"{name}: max |sdgraph - ComfyUI| = {diff:.3g} (latent max {float(expected.abs().max()):.3g})")
    assert diff <= TOLERANCE * max(1.0, float(expected.abs().max())), name


GUIDANCE = set(NODES) - {"ModelSamplingDiscrete"}


def _without(patches: list, drop: str | None = None) -> list:
    """The patches without the guidance ones (or, with `drop`, without that one only)."""
    return [p for p in patches if (p[0] != drop if drop else p[0] not in GUIDANCE)]


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if _without(c["patches"]) != c["patches"]))
def test_each_guidance_changes_sampling(name: str, reference: Any, toy_model: DiffusionModel, ctx: Any) -> None:
    """ComfyUI's guided latent is far from the unguided one (so agreeing with it is agreeing on the guidance);
    chained with SAG, PAG changes nothing (see attention_toy)."""
    case = CASES[name]
    shadowed = name == "pag_then_sag"
    patches = _without(case["patches"], "PerturbedAttentionGuidance" if shadowed else None)
    gap = float((torch.from_numpy(reference[name]) - sample_case({**case, "patches": patches}, toy_model, ctx))
                .abs().max())
    assert (gap < 1e-4 if shadowed else gap > 0.05), (name, gap)
