"""ComfyUI's ControlNet object surface, for packs that apply ControlNets themselves: `copy()`,
`set_cond_hint`, `set_previous_controlnet` / `previous_controlnet`; the result samples exactly as sdgraph's
ControlNetApplyAdvanced does."""
from __future__ import annotations

import pytest
import torch

from sdgraph.nodes.sd.conditioning import ControlNet, TextEncode
from sdgraph.nodes.sd.control import control_residuals
from sdgraph.nodes.sd.latent import EmptyLatent
from sdgraph.nodes.sd.loaders import ControlNetLoader
from sdgraph.nodes.sd.sampling import KSampler
from tests.sd.conftest import call


def comfy_style_apply(conditioning: list, control_net, image: torch.Tensor, strength: float,
                      start: float, end: float) -> list:
    """What ComfyUI's ControlNetApplyAdvanced does, as a pack would write it."""
    made: dict[int, object] = {}
    out = []
    for cond, extras in conditioning:
        previous = extras.get("control", None)
        if id(previous) not in made:
            c_net = control_net.copy().set_cond_hint(image.movedim(-1, 1), strength, (start, end))
            c_net.set_previous_controlnet(previous)
            made[id(previous)] = c_net
        out.append([cond, {**extras, "control": made[id(previous)]}])
    return out


def sample(ctx, model, positive, negative) -> torch.Tensor:
    (latent,) = call(EmptyLatent, ctx, width=64, height=64, batch_size=1)
    (out,) = call(KSampler, ctx, model=model, seed=3, steps=3, cfg=5.0, sampler_name="euler", scheduler="normal",
                  positive=positive, negative=negative, latent_image=latent, denoise=1.0)
    return out["samples"]


def test_a_pack_applying_a_controlnet_the_comfyui_way_samples_as_sdgraphs_node(ctx, sd1):
    model, clip, _ = sd1
    (net,) = call(ControlNetLoader, ctx, control_net_name="tiny-controlnet")
    pos = call(TextEncode, ctx, text="a circle", clip=clip)[0]
    neg = call(TextEncode, ctx, text="", clip=clip)[0]
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(0))
    ours_pos, ours_neg = call(ControlNet, ctx, positive=pos, negative=neg, control_net=net, image=image,
                              strength=0.7, start_percent=0.1, end_percent=0.8)
    ours_pos, ours_neg = call(ControlNet, ctx, positive=ours_pos, negative=ours_neg, control_net=net,
                              image=image.flip(1), strength=0.4, start_percent=0.0, end_percent=1.0)
    theirs_pos = comfy_style_apply(comfy_style_apply(pos, net, image, 0.7, 0.1, 0.8), net, image.flip(1),
                                   0.4, 0.0, 1.0)
    theirs_neg = comfy_style_apply(comfy_style_apply(neg, net, image, 0.7, 0.1, 0.8), net, image.flip(1),
                                   0.4, 0.0, 1.0)
    hint = theirs_pos[0][1]["control"]
    assert hint.previous_controlnet is not None and hint.previous_controlnet.previous_controlnet is None
    assert hint.timestep_percent_range == (0.0, 1.0) and hint.previous_controlnet.strength == pytest.approx(0.7)
    assert torch.equal(hint.cond_hint_original, image.flip(1).movedim(-1, 1))
    assert torch.equal(sample(ctx, model, theirs_pos, theirs_neg), sample(ctx, model, ours_pos, ours_neg))
    assert not torch.equal(sample(ctx, model, theirs_pos, theirs_neg), sample(ctx, model, pos, neg))


def test_copies_are_independent_and_a_hintless_controlnet_is_a_clear_error(ctx, sd1):
    (net,) = call(ControlNetLoader, ctx, control_net_name="tiny-controlnet")
    first = net.copy().set_cond_hint(torch.zeros(1, 3, 64, 64), 1.0)
    second = first.copy().set_cond_hint(torch.ones(1, 3, 64, 64), 0.5)
    assert first.strength == 1.0 and float(first.image.max()) == 0.0 and float(second.image.min()) == 1.0
    x, t, cond = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, 32)
    with pytest.raises(ValueError, match="never given its hint"):
        control_residuals(net.copy(), x, t, cond, 0.5)
