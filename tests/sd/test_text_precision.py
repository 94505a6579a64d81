"""Text encoders hold fp16-valued weights, as ComfyUI keeps CLIP, whatever dtype they are stored in."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sdgraph.nodes.sd.text_precision import round_weights_to_half  # noqa: E402


def test_float32_weights_take_half_precision_values_and_keep_their_dtype() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 64)
    layer.register_buffer("scale", torch.rand(64))
    layer.register_buffer("ids", torch.arange(64))
    before = layer.weight.detach().clone()
    round_weights_to_half(layer)
    assert layer.weight.dtype == torch.float32
    assert torch.equal(layer.weight, before.half().float())
    assert not torch.equal(layer.weight, before)  # random fp32 values are not fp16 values
    assert torch.equal(layer.scale, layer.scale.half().float())
    assert torch.equal(layer.ids, torch.arange(64))


def test_half_and_bfloat16_weights_are_left_alone() -> None:
    for dtype in (torch.float16, torch.bfloat16):
        layer = torch.nn.Linear(8, 8).to(dtype)
        before = layer.weight.detach().clone()
        round_weights_to_half(layer)
        assert torch.equal(layer.weight, before)


def test_every_text_encoder_of_a_loaded_checkpoint_carries_fp16_values(sd1, sdxl) -> None:
    for clip in (sd1[1], sdxl[1]):
        for index in range(len(clip.specs)):
            params = dict(clip.encoder(index).named_parameters())
            assert params and all(p.dtype == torch.float32 for p in params.values())
            for name, param in params.items():
                assert torch.equal(param, param.half().float()), (clip.name, index, name)


def test_a_lora_patched_text_encoder_keeps_fp16_values_and_unpatches_exactly(ctx, sd1) -> None:
    from sdgraph.nodes.sd.loaders import LoraLoader

    from conftest import call

    model, clip, _ = sd1
    before = {n: p.detach().clone() for n, p in clip.encoder(0).named_parameters()}
    _, patched = call(LoraLoader, ctx, model=model, clip=clip, lora_name="tiny-lora.safetensors",
                      strength_model=1.0, strength_clip=0.7)
    changed = 0
    for name, param in patched.encoder(0).named_parameters():
        assert torch.equal(param, param.half().float()), name
        changed += not torch.equal(param, before[name])
    assert changed > 0
    for name, param in clip.encoder(0).named_parameters():  # the unpatched CLIP gets its own weights back
        assert torch.equal(param, before[name]), name
