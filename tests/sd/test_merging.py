"""Weight patches in ComfyUI's shape: merges, block merges, subtract/add, attention scaling, CLIP merges.

Every expected weight is computed here from the two source models' own tensors, by the formula each node
documents; the sources must come back unchanged once the merged model has been used."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import call, make_ctx
from tiny_models import save_many_checkpoints
from sdgraph.models import ModelManager
from sdgraph.nodes.sd import merging
from sdgraph.nodes.sd.attention_multiply import (CLIPAttentionMultiply, UNetCrossAttentionMultiply,
                                                 UNetSelfAttentionMultiply)
from sdgraph.nodes.sd.loading import load_checkpoint
from sdgraph.nodes.sd.lora import apply_lora, read_lora
from sdgraph.nodes.sd.merging import block_ratio


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, ModelManager]:
    """Two tiny SD 1.x checkpoints with different weights, under one CPU manager."""
    folder = tmp_path_factory.mktemp("merge")
    first, second = save_many_checkpoints(folder, 2, first_seed=40)
    manager = ModelManager(force_cpu=True)
    return load_checkpoint(first, manager), load_checkpoint(second, manager), manager


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def unet_weights(model: Any) -> dict[str, torch.Tensor]:
    return weights(model.unet())


def test_simple_merge_blends_every_weight_and_leaves_the_sources(pair: Any) -> None:
    (a, _, _), (b, _, _), _ = pair
    wa, wb = unet_weights(a), unet_weights(b)
    merged = call(merging.ModelMergeSimple, None, model1=a, model2=b, ratio=0.3)[0]
    got = unet_weights(merged)
    assert got.keys() == wa.keys()
    for name in wa:
        torch.testing.assert_close(got[name], 0.3 * wa[name] + 0.7 * wb[name], rtol=0, atol=1e-6)
    assert all(torch.equal(unet_weights(a)[n], wa[n]) for n in wa)  # a's slot is restored when a is used
    assert all(torch.equal(unet_weights(b)[n], wb[n]) for n in wb)
    assert a.patches == () and merged.patches != ()


def test_block_merge_takes_the_longest_matching_prefix(pair: Any) -> None:
    (a, _, _), (b, _, _), _ = pair
    wa, wb = unet_weights(a), unet_weights(b)
    merged = call(merging.ModelMergeBlocks, None, model1=a, model2=b, input=1.0, middle=0.0, out=0.25)[0]
    got = unet_weights(merged)
    assert torch.equal(got["conv_in.weight"], wa["conv_in.weight"])  # input_blocks.0 -> "input": all model1
    mid = [n for n in wa if n.startswith("mid_block.")]
    assert mid and all(torch.equal(got[n], wb[n]) for n in mid)  # "middle": all model2
    up = [n for n in wa if n.startswith("up_blocks.")]  # output_blocks.* -> "out" (the longest prefix)
    assert up and all(torch.allclose(got[n], 0.25 * wa[n] + 0.75 * wb[n], atol=1e-6) for n in up)
    assert torch.equal(got["time_embedding.linear_1.weight"], wa["time_embedding.linear_1.weight"])  # default
    for ratios in ({"input_blocks.10": 0.9, "input_blocks.1": 0.1, "out.": 0.5},
                   {"input_blocks.1": 0.1, "input_blocks.10": 0.9, "out.": 0.5}):  # SDXL's names: no dot
        assert block_ratio("diffusion_model.input_blocks.10.1.proj_in.weight", ratios, 1.0) == 0.9
        assert block_ratio("diffusion_model.input_blocks.1.0.emb_layers.1.bias", ratios, 1.0) == 0.1
        assert block_ratio("diffusion_model.output_blocks.1.0.skip_connection.bias", ratios, 1.0) == 1.0


def test_sd1_block_merge_has_a_ratio_per_block(pair: Any) -> None:
    (a, _, _), (b, _, _), _ = pair
    wa, wb = unet_weights(a), unet_weights(b)
    ratios = {spec.name: 1.0 for spec in merging.ModelMergeSD1.inputs[2:]}
    ratios["input_blocks.1."] = 0.0  # the first resnet (and attention) of the first level
    merged = call(merging.ModelMergeSD1, None, model1=a, model2=b, **ratios)[0]
    got = unet_weights(merged)
    changed = {n for n in wa if not torch.equal(got[n], wa[n])}
    assert changed and all(n.startswith(("down_blocks.0.resnets.0.", "down_blocks.0.attentions.0.")) for n in changed)
    assert all(torch.equal(got[n], wb[n]) for n in changed)


def test_subtract_then_add_gives_the_other_model(pair: Any) -> None:
    (a, _, _), (b, _, _), _ = pair
    wb = unet_weights(b)
    difference = call(merging.ModelMergeSubtract, None, model1=b, model2=a, multiplier=1.0)[0]
    restored = call(merging.ModelMergeAdd, None, model1=a, model2=difference)[0]
    got = unet_weights(restored)
    for name in wb:
        torch.testing.assert_close(got[name], wb[name], rtol=0, atol=1e-5)


def test_a_merge_carries_the_other_models_lora(pair: Any, dirs: Any) -> None:
    (a, _, _), (b, clip_b, _), manager = pair
    identity, raw = read_lora(dirs.find_model("loras", "tiny-lora.safetensors"), manager)
    b_lora = apply_lora(b, None, identity, raw, 0.8, 0.0)[0]
    wa, wb_lora = unet_weights(a), unet_weights(b_lora)
    merged = merging.merge_models(a, b_lora, 0.5, 0.5)
    got = unet_weights(merged)
    assert any(not torch.equal(wb_lora[n], unet_weights(b)[n]) for n in wb_lora)
    for name in wa:
        torch.testing.assert_close(got[name], 0.5 * wa[name] + 0.5 * wb_lora[name], rtol=0, atol=1e-5)


def test_attention_multiply_scales_only_its_layer(pair: Any) -> None:
    (a, clip_a, _), _, _ = pair
    wa = unet_weights(a)
    scaled = call(UNetSelfAttentionMultiply, None, model=a, q=2.0, k=1.0, v=0.5, out=1.0)[0]
    got = unet_weights(scaled)
    for name in wa:
        factor = 2.0 if ".attn1.to_q." in name else 0.5 if ".attn1.to_v." in name else 1.0
        torch.testing.assert_close(got[name], wa[name] * factor, rtol=0, atol=0)
    cross = unet_weights(call(UNetCrossAttentionMultiply, None, model=a, q=1.0, k=3.0, v=1.0, out=1.0)[0])
    assert all(torch.equal(cross[n], wa[n] * (3.0 if ".attn2.to_k." in n else 1.0)) for n in wa)
    before = weights(clip_a.encoder(0))
    clip = call(CLIPAttentionMultiply, None, clip=clip_a, q=1.0, k=1.0, v=1.0, out=4.0)[0]
    after = weights(clip.encoder(0))
    outs = [n for n in before if "self_attn.out_proj." in n]
    assert outs and any(n.endswith(".bias") for n in outs)
    assert all(torch.equal(after[n], before[n] * (4.0 if n in outs else 1.0)) for n in before)


def test_clip_merge_blends_the_text_encoder(pair: Any, dirs: Any) -> None:
    from sdgraph.nodes.sd.conditioning import TextEncode

    (_, clip_a, _), (_, clip_b, _), manager = pair
    ctx = make_ctx(dirs, manager)
    wa, wb = weights(clip_a.encoder(0)), weights(clip_b.encoder(0))
    merged = call(merging.CLIPMergeSimple, None, clip1=clip_a, clip2=clip_b, ratio=0.25)[0]
    got = weights(merged.encoder(0))
    for name in wa:  # text encoders hold fp16 values (as ComfyUI's do): the blend is rounded to them
        expected = (0.25 * wa[name] + 0.75 * wb[name]).half().float()
        torch.testing.assert_close(got[name], expected, rtol=0, atol=0)
    keep_b = call(merging.CLIPMergeSimple, None, clip1=clip_a, clip2=clip_b, ratio=0.0)[0]
    encoded = call(TextEncode, ctx, text="a red circle", clip=keep_b)[0][0][0]
    torch.testing.assert_close(encoded, call(TextEncode, ctx, text="a red circle", clip=clip_b)[0][0][0])


def test_add_patches_speaks_comfyuis_keys(pair: Any) -> None:
    (a, _, _), _, _ = pair
    model = a.clone()
    state = model.model_state_dict()
    key = "diffusion_model.input_blocks.0.0.weight"
    assert key in state and all(k.startswith("diffusion_model.") for k in state)
    assert torch.equal(state[key], a.slot.module.conv_in.weight)
    bias = "diffusion_model.out.2.bias"
    taken = model.add_patches({key: (torch.ones_like(state[key]),), "diffusion_model.nope": (None,),
                               (bias, (0, 0, 1)): ("set", (torch.full((1,), 7.0),))}, 0.5, 2.0)
    assert sorted(map(str, taken)) == sorted(map(str, [key, (bias, (0, 0, 1))]))
    got = unet_weights(model)
    torch.testing.assert_close(got["conv_in.weight"], 2.0 * state[key] + 0.5)
    assert got["conv_out.bias"][0] == 7.0 and torch.equal(got["conv_out.bias"][1:], state[bias][1:])  # the slice only
    clip_keys = pair[0][1].model_state_dict()
    assert "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight" in clip_keys
    bad = a.clone()
    bad.add_patches({key: ("loha", (None,))})
    with pytest.raises(ValueError, match="input_blocks|conv_in.*loha|loha"):
        bad.unet()
    a.unet()  # the failed patch leaves the slot usable
