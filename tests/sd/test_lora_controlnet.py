"""LoRA patches and ControlNet hints: strength 0 changes nothing, strength > 0 changes the output."""
from __future__ import annotations

import torch

from sdgraph.nodes.sd.conditioning import ControlNet, ControlNetApply, TextEncode
from sdgraph.nodes.sd.control import control_residuals
from sdgraph.nodes.sd.loaders import ControlNetLoader, LoraLoader, LoraLoaderModelOnly
from sdgraph.nodes.sd.lora import read_lora, unmatched_stems

from conftest import call, unet_out


def test_every_lora_key_matches_a_module(ctx, sd1):
    model, clip, _ = sd1
    _, raw = read_lora(ctx.dirs.find_model("loras", "tiny-lora.safetensors"), ctx.models)
    assert raw and unmatched_stems(raw, model, clip) == []


def test_lora_strength_zero_is_identity_and_positive_changes(ctx, sd1):
    model, clip, _ = sd1
    base = unet_out(model)
    zero_model, zero_clip = call(LoraLoader, ctx, model=model, clip=clip, lora_name="tiny-lora.safetensors",
                                 strength_model=0.0, strength_clip=0.0)
    assert torch.equal(unet_out(zero_model), base)
    lora_model, lora_clip = call(LoraLoader, ctx, model=model, clip=clip, lora_name="tiny-lora.safetensors",
                                 strength_model=1.0, strength_clip=1.0)
    patched = unet_out(lora_model)
    assert (patched - base).abs().max() > 1e-3
    assert torch.equal(unet_out(model), base), "using the base model again restores its weights exactly"
    assert torch.equal(unet_out(lora_model), patched)
    plain = call(TextEncode, ctx, text="a red circle", clip=clip)[0][0][0]
    lora_text = call(TextEncode, ctx, text="a red circle", clip=lora_clip)[0][0][0]
    assert (lora_text - plain).abs().max() > 1e-3


def test_lora_model_only_scales_with_strength(ctx, sd1):
    model, _, _ = sd1
    base = unet_out(model)
    (half,) = call(LoraLoaderModelOnly, ctx, model=model, lora_name="tiny-lora.safetensors", strength_model=0.5)
    (full,) = call(LoraLoaderModelOnly, ctx, model=model, lora_name="tiny-lora.safetensors", strength_model=1.0)
    d_half, d_full = (unet_out(half) - base).abs().mean(), (unet_out(full) - base).abs().mean()
    assert 0 < d_half < d_full


def test_controlnet_hints_chain_and_residuals(ctx, sd1):
    model, clip, _ = sd1
    (net,) = call(ControlNetLoader, ctx, control_net_name="tiny-controlnet")
    pos = call(TextEncode, ctx, text="a circle", clip=clip)[0]
    neg = call(TextEncode, ctx, text="", clip=clip)[0]
    image = torch.rand(1, 64, 64, 3)
    assert call(ControlNet, ctx, positive=pos, negative=neg, control_net=net, image=image, strength=0.0,
                start_percent=0.0, end_percent=1.0) == (pos, neg)
    p1, n1 = call(ControlNet, ctx, positive=pos, negative=neg, control_net=net, image=image, strength=1.0,
                  start_percent=0.0, end_percent=0.5)
    p2, _ = call(ControlNet, ctx, positive=p1, negative=n1, control_net=net, image=image, strength=0.5,
                 start_percent=0.0, end_percent=1.0)
    hint = p2[0][1]["control"]
    assert hint.previous is p1[0][1]["control"] and len(hint.chain()) == 2
    assert p1[0][1]["control"] is n1[0][1]["control"]
    x, t, cond = torch.randn(1, 4, 8, 8), torch.tensor([500]), pos[0][0]
    both = control_residuals(hint, x, t, cond, 0.2)
    late = control_residuals(hint, x, t, cond, 0.8)  # the first hint ended at 0.5
    assert set(both) == {"down_block_additional_residuals", "mid_block_additional_residual"}
    assert not torch.allclose(both["mid_block_additional_residual"], late["mid_block_additional_residual"])
    assert control_residuals(p1[0][1]["control"], x, t, cond, 0.8) == {}
    with torch.inference_mode():
        plain = model.unet()(x, t, encoder_hidden_states=cond).sample
        guided = model.unet()(x, t, encoder_hidden_states=cond, **both).sample
    assert (guided - plain).abs().max() > 1e-3
    (simple,) = call(ControlNetApply, ctx, conditioning=pos, control_net=net, image=image, strength=1.0)
    assert simple[0][1]["control"].end_percent == 1.0 and simple[0][0] is pos[0][0]
