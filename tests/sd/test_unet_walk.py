"""The UNet walk that applies a MODEL's transformer_options: it computes what diffusers computes when the patches
change nothing, numbers blocks and attentions as ComfyUI's LDM UNet does, hands patches ComfyUI's arguments, and
is what the sampler calls (only) when a MODEL carries patches."""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import pytest
import torch

from conftest import call
from sdgraph.nodes.sd import denoiser as denoiser_module
from sdgraph.nodes.sd.conditioning import TextEncode
from sdgraph.nodes.sd.ldm_names import unet_name_to_ldm
from sdgraph.nodes.sd.sampling import KSampler
from sdgraph.nodes.sd.schedules import compute_sigmas, schedule_of
from sdgraph.nodes.sd.unet_walk import has_unet_patches, patched_unet

ALL_HOOKS = ("attn1_patch", "attn2_patch", "attn1_output_patch", "attn2_output_patch", "input_block_patch",
             "input_block_patch_after_skip", "output_block_patch", "middle_patch")


def inputs(unet: torch.nn.Module, batch: int = 2, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    context = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    out: dict[str, Any] = {"sample": x, "timestep": torch.tensor([500.0]), "context": context}
    if unet.config.addition_embed_type == "text_time":
        ids = (unet.config.projection_class_embeddings_input_dim - 64) // unet.config.addition_time_embed_dim
        out["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, 64, generator=g),
                                    "time_ids": torch.randn(batch, ids, generator=g) * 100}
    return out


def plain(unet: torch.nn.Module, args: dict[str, Any], **extra: Any) -> torch.Tensor:
    with torch.inference_mode():
        return unet(args["sample"], args["timestep"], encoder_hidden_states=args["context"],
                    added_cond_kwargs=args.get("added_cond_kwargs"), return_dict=False, **extra)[0]


def walked(unet: torch.nn.Module, args: dict[str, Any], patches: dict[str, Any] | None = None,
           replace: dict[str, Any] | None = None, **extra: Any) -> torch.Tensor:
    options: dict[str, Any] = {"patches": patches or {}, "patches_replace": replace or {},
                               "cond_or_uncond": [1, 0], "sigmas": torch.tensor([3.0])}
    with torch.inference_mode():
        return patched_unet(unet, args["sample"], args["timestep"], args["context"], options,
                            added_cond_kwargs=args.get("added_cond_kwargs"), **extra)


def unchanged_hooks() -> dict[str, list[Callable]]:
    """A patch on every hook that hands back what it was given."""
    return {"attn1_patch": [lambda n, c, v, e: (n, c, v)], "attn2_patch": [lambda n, c, v, e: (n, c, v)],
            "attn1_output_patch": [lambda n, e: n], "attn2_output_patch": [lambda n, e: n],
            "input_block_patch": [lambda h, o: h], "input_block_patch_after_skip": [lambda h, o: h],
            "output_block_patch": [lambda h, s, o: (h, s)], "middle_patch": [lambda x, e: x]}


@pytest.mark.parametrize("kind", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
def test_patches_that_change_nothing_give_the_diffusers_output_bit_for_bit(tiny_tree: dict, kind: str) -> None:
    unet = tiny_tree[kind].unet
    args = inputs(unet)
    assert torch.equal(walked(unet, args, unchanged_hooks()), plain(unet, args))


def test_controlnet_and_adapter_residuals_enter_where_diffusers_adds_them(tiny_tree: dict) -> None:
    g = torch.Generator().manual_seed(3)
    for kind, adapter_shapes in (("sd1", [(32, 8, 8), (64, 4, 4)]), ("sdxl", [(64, 4, 4), (128, 4, 4), (128, 4, 4)])):
        unet = tiny_tree[kind].unet
        args = inputs(unet)
        skips: list[torch.Size] = []
        walked(unet, args, {"input_block_patch": [lambda h, o: skips.append(h.shape) or h]})
        down = [torch.randn(s, generator=g) for s in skips]
        mid = torch.randn(skips[-1], generator=g)
        adapter = [torch.randn(2, *s, generator=g) for s in adapter_shapes]
        control = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        assert torch.equal(walked(unet, args, unchanged_hooks(), **control), plain(unet, args, **control))
        expected = plain(unet, args, down_intrablock_additional_residuals=list(adapter))
        assert torch.equal(walked(unet, args, unchanged_hooks(), down_intrablock_additional_residuals=adapter),
                           expected)
        assert not torch.equal(expected, plain(unet, args))


def _ldm_attention_order(unet: torch.nn.Module) -> list[tuple[str, int, int]]:
    """(block name, number, depth) of every transformer, named from the LDM checkpoint names, in run order."""
    found = []
    for name, module in unet.named_modules():
        if type(module).__name__ != "Transformer2DModel":
            continue
        ldm = unet_name_to_ldm(name, dict(unet.config)).split(".")  # e.g. input_blocks.1.1 / middle_block.1
        block = {"input_blocks": "input", "middle_block": "middle", "output_blocks": "output"}[ldm[0]]
        number = 0 if block == "middle" else int(ldm[1])
        found.append((block, number, len(module.transformer_blocks)))
    rank = {"input": 0, "middle": 1, "output": 2}
    return sorted(found, key=lambda item: (rank[item[0]], item[1]))


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_attention_patches_get_comfyuis_numbering_and_extra_options(tiny_tree: dict, kind: str) -> None:
    unet = tiny_tree[kind].unet
    args = inputs(unet)
    seen: dict[str, list[dict[str, Any]]] = {"attn1": [], "attn2": []}

    def recorder(which: str) -> Callable:
        def patch(n: torch.Tensor, context: torch.Tensor, value: torch.Tensor, extra: dict) -> tuple:
            seen[which].append({**extra, "n": n.shape, "context": context.shape, "value_is_context": value is context})
            return n, context, value
        return patch

    walked(unet, args, {"attn1_patch": [recorder("attn1")], "attn2_patch": [recorder("attn2")]})
    expected = [(block, number, index, t) for t, (block, number, depth) in enumerate(_ldm_attention_order(unet))
                for index in range(depth)]
    for which in ("attn1", "attn2"):
        got = [(e["block"][0], e["block"][1], e["block_index"], e["transformer_index"]) for e in seen[which]]
        assert got == expected
        for e in seen[which]:
            channels = e["activations_shape"][1]
            assert e["original_shape"] == [2, 4, 8, 8] and e["cond_or_uncond"] == [1, 0]
            assert e["sigmas"].tolist() == [3.0] and e["n"][0] == 2 and e["n"][2] == channels
            assert e["n"][1] == e["activations_shape"][2] * e["activations_shape"][3]
            assert e["n_heads"] * e["dim_head"] == channels and "patches" not in e and "patches_replace" not in e
            assert e["value_is_context"]
    assert all(e["context"] == seen["attn1"][i]["n"] for i, e in enumerate(seen["attn1"]))  # self-attention
    assert all(e["context"] == args["context"].shape for e in seen["attn2"])
    if kind == "sd1":  # heads = attention_head_dim in SD 1.x configs
        assert {e["n_heads"] for e in seen["attn1"]} == {unet.config.attention_head_dim}


def test_block_patches_run_in_ldm_order_and_the_skip_is_kept_between_the_two_input_hooks(tiny_tree: dict) -> None:
    unet = tiny_tree["sd1"].unet
    args = inputs(unet)
    before: list[tuple[Any, torch.Tensor]] = []
    entering: dict[int, torch.Tensor] = {}
    skips: list[tuple[Any, torch.Tensor, torch.Tensor]] = []

    def record_input(h: torch.Tensor, options: dict) -> torch.Tensor:
        before.append((options["block"], h.clone()))
        return h

    def double_after_skip(h: torch.Tensor, options: dict) -> torch.Tensor:
        return h * 2 if options["block"] == ("input", 1) else h

    def record_output(h: torch.Tensor, skip: torch.Tensor, options: dict) -> tuple:
        skips.append((options["block"], h.clone(), skip.clone()))
        return h, skip

    def record_downsampler_input(module: Any, given: tuple) -> None:
        entering[0] = given[0].clone()

    hook = unet.down_blocks[0].downsamplers[0].register_forward_pre_hook(record_downsampler_input)
    try:
        walked(unet, args, {"input_block_patch": [record_input], "input_block_patch_after_skip": [double_after_skip],
                            "output_block_patch": [record_output]})
    finally:
        hook.remove()
    assert [b for b, _ in before] == [("input", i) for i in range(4)]
    assert [b for b, _, _ in skips] == [("output", i) for i in range(4)]
    for (_, _, skip), (_, kept) in zip(skips, reversed(before)):
        assert torch.equal(skip, kept)  # the output blocks meet the input blocks' h as it was before after_skip
    assert torch.equal(entering[0], before[1][1] * 2)  # while the next block ran on the doubled h
    assert skips[0][1].shape == before[3][1].shape and skips[2][1].shape[-2:] == (8, 8)


def _explicit_attention(heads: int) -> Callable:
    """softmax(q k^T / sqrt(d)) v per head, written out (not the walk's attention function)."""
    def replace(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: dict) -> torch.Tensor:
        b, n, inner = q.shape
        d = inner // extra["n_heads"]
        qh, kh, vh = (t.reshape(b, -1, extra["n_heads"], d).permute(0, 2, 1, 3) for t in (q, k, v))
        weights = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)
        return (weights @ vh).permute(0, 2, 1, 3).reshape(b, n, inner)
    return replace


def test_a_replacement_computing_plain_attention_gives_the_unpatched_output(tiny_tree: dict) -> None:
    unet = tiny_tree["sdxl"].unet
    args = inputs(unet)
    keys = [(b, n, i) for b, n, depth in _ldm_attention_order(unet) for i in range(depth)]
    calls: list[tuple] = []

    def counted(key: tuple) -> Callable:
        inner = _explicit_attention(0)

        def replace(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: dict) -> torch.Tensor:
            calls.append((key, (extra["block"][0], extra["block"][1], extra["block_index"])))
            return inner(q, k, v, extra)
        return replace

    replace = {"attn1": {key: counted(key) for key in keys}, "attn2": {key: counted(key) for key in keys}}
    out = walked(unet, args, replace=replace)
    torch.testing.assert_close(out, plain(unet, args), rtol=0, atol=1e-5)
    assert len(calls) == 2 * len(keys) and all(key == where for key, where in calls)


def test_a_block_wide_replacement_applies_where_no_specific_one_is_set(tiny_tree: dict) -> None:
    unet = tiny_tree["sdxl"].unet
    args = inputs(unet)
    block, number, depth = next(item for item in _ldm_attention_order(unet) if item[2] == 2)
    hits: list[str] = []

    def tagged(tag: str) -> Callable:
        def replace(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: dict) -> torch.Tensor:
            hits.append(f"{tag}{extra['block_index']}")
            return _explicit_attention(0)(q, k, v, extra)
        return replace

    walked(unet, args, replace={"attn1": {(block, number): tagged("block"), (block, number, 1): tagged("exact")}})
    assert hits == ["block0", "exact1"]


def test_an_output_patch_that_drops_cross_attention_equals_zeroed_projections(tiny_tree: dict) -> None:
    unet = tiny_tree["sd1"].unet
    args = inputs(unet)
    zeroed = copy.deepcopy(unet)
    with torch.no_grad():
        for module in zeroed.modules():
            if type(module).__name__ == "BasicTransformerBlock":
                module.attn2.to_out[0].weight.zero_()
                module.attn2.to_out[0].bias.zero_()
    middles: list[tuple] = []
    out = walked(unet, args, {"attn2_output_patch": [lambda n, e: torch.zeros_like(n)],
                              "middle_patch": [lambda x, e: middles.append(x.shape) or x]})
    torch.testing.assert_close(out, plain(zeroed, args), rtol=0, atol=1e-6)
    assert len(middles) == 4 and not torch.allclose(out, plain(unet, args))


def test_unpatched_models_take_the_plain_path(sd1: tuple, ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not has_unet_patches({}) and not has_unet_patches({"patches": {"attn1_patch": []}})
    assert has_unet_patches({"patches_replace": {"attn1": {("input", 1): print}}})

    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("the walk ran for a model without patches")

    monkeypatch.setattr(denoiser_module, "patched_unet", refuse)
    model, clip, _ = sd1
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    positive = call(TextEncode, ctx, text="a red circle", clip=clip)[0]
    call(KSampler, ctx, model=model, seed=1, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal",
         positive=positive, negative=positive, latent_image=latent, denoise=1.0)


def _sample(ctx: Any, model: Any, clip: Any, cfg: float, steps: int = 3) -> torch.Tensor:
    positive = call(TextEncode, ctx, text="a red circle", clip=clip)[0]
    negative = call(TextEncode, ctx, text="blue", clip=clip)[0]
    return call(KSampler, ctx, model=model, seed=7, steps=steps, cfg=cfg, sampler_name="euler", scheduler="normal",
                positive=positive, negative=negative, latent_image={"samples": torch.zeros(1, 4, 8, 8)},
                denoise=1.0)[0]["samples"]


def test_the_sampler_hands_patches_cond_or_uncond_and_the_steps_sigmas(sd1: tuple, ctx: Any) -> None:
    model, clip, _ = sd1
    calls: list[tuple[list[int], list[float], int]] = []

    def recorder(n: torch.Tensor, context: torch.Tensor, value: torch.Tensor, extra: dict) -> tuple:
        if extra["transformer_index"] == 0:
            calls.append((extra["cond_or_uncond"], extra["sigmas"].tolist(), n.shape[0]))
        return n, context, value

    patched = model.clone()
    patched.set_model_attn2_patch(recorder)
    guided = _sample(ctx, patched, clip, cfg=5.0)
    sigmas = compute_sigmas(schedule_of(model.alphas_cumprod), "normal", 3)[:-1].float().tolist()
    assert calls == [([1, 0], [s], 2) for s in sigmas]
    assert torch.equal(guided, _sample(ctx, model, clip, cfg=5.0))  # the recorder changes nothing
    calls.clear()
    _sample(ctx, patched, clip, cfg=1.0)
    assert calls == [([0], [s], 1) for s in sigmas]
    assert "cond_or_uncond" not in patched.model_options["transformer_options"]  # per call, not on the MODEL
