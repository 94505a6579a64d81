"""Pieces of the training command that can be checked in milliseconds: plans, captions, embeddings, LoRA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sdgraph.tiny import architecture as arch
from sdgraph.tiny import train
from sdgraph.tiny.lora import LoRALinear, inject_lora, lora_state_dict, merge_lora_file, remove_lora, save_lora
from sdgraph.tiny.shapes import ATTRIBUTES, POSITION_PHRASES, generate_dataset

torch.set_num_threads(1)


def test_plan_is_a_function_of_minutes_and_device() -> None:
    assert train.make_plan(55, "cpu", 0) == train.make_plan(55, "cpu", 0)
    short, long = train.make_plan(10, "cpu", 0), train.make_plan(55, "cpu", 0)
    assert long.unet_steps > 4 * short.unet_steps
    assert train.make_plan(7, "cuda", 0).unet_batch > long.unet_batch


def test_default_cpu_plan_fits_the_hour() -> None:
    minutes = train.DEFAULT_MINUTES["cpu"]
    plan = train.make_plan(minutes, "cpu", 0)
    p = train.PROFILES["cpu"]
    seconds = (p.fixed_s + plan.vae_steps * p.vae_step_s + plan.unet_steps * p.unet_step_s
               + plan.controlnet_steps * p.controlnet_step_s + plan.lora_steps * p.lora_step_s
               + plan.classifier_steps * p.classifier_step_s)
    assert seconds <= minutes * 60 + 1 and minutes <= 57  # 3 minutes to spare on this machine


@pytest.fixture(scope="module")
def captions() -> train.Captions:
    return train.tokenize_captions(generate_dataset(20, seed=1), arch.load_tokenizer(), "cpu")


def test_caption_rows_are_the_samples_own_variants(captions: train.Captions) -> None:
    index = torch.arange(20)
    generator = torch.Generator().manual_seed(0)
    rows = captions.pick(index, drop=0.0, generator=generator)
    for i, row in zip(index.tolist(), rows.tolist()):
        assert row in captions.rows[i].tolist()
    dropped = captions.pick(index, drop=1.0, generator=generator)
    assert set(dropped.tolist()) == {captions.empty_row}
    empty_ids = captions.ids[captions.empty_row].tolist()
    assert empty_ids[:2] == [arch.BOS_TOKEN_ID, arch.EOS_TOKEN_ID] and len(empty_ids) == 77


def test_stripped_captions_leave_out_only_the_position(captions: train.Captions) -> None:
    index = torch.arange(20).repeat(10)
    kept = captions.pick(index, drop=0.0, generator=torch.Generator().manual_seed(0))
    stripped = captions.pick(index, drop=0.0, generator=torch.Generator().manual_seed(0), strip_position=1.0)
    position = list(ATTRIBUTES).index("position")
    not_named = len(ATTRIBUTES["position"])
    assert (captions.named[kept][:, position] != not_named).any()
    assert (captions.named[stripped][:, position] == not_named).all()
    others = [i for i in range(len(ATTRIBUTES)) if i != position]
    assert torch.equal(captions.named[kept][:, others], captions.named[stripped][:, others])
    for i, row in zip(index.tolist(), stripped.tolist()):
        assert row in captions.rows[i].tolist()


def test_captions_record_which_attributes_they_name(captions: train.Captions) -> None:
    assert train.named_attributes("a large red circle on the left, blue background") == [
        ATTRIBUTES[name].index(value) for name, value in
        (("shape", "circle"), ("colour", "red"), ("background", "blue"), ("position", "left"), ("size", "large"))]
    assert train.named_attributes("a red square") == [
        ATTRIBUTES["shape"].index("square"), ATTRIBUTES["colour"].index("red"), len(ATTRIBUTES["background"]),
        len(ATTRIBUTES["position"]), len(ATTRIBUTES["size"])]
    assert captions.named[captions.empty_row].tolist() == [len(values) for values in ATTRIBUTES.values()]


def test_caption_heads_teach_the_text_encoder_to_tell_positions_apart() -> None:
    torch.manual_seed(0)
    tokenizer = arch.load_tokenizer()
    prompts = [f"a red circle {phrase}" for phrase in POSITION_PHRASES.values()]
    ids = tokenizer(prompts, padding="max_length", max_length=arch.MAX_TOKENS, return_tensors="pt").input_ids
    named = torch.tensor([train.named_attributes(p) for p in prompts])
    encoder, heads = arch.build_text_encoder(), train.CaptionHeads()
    optimizer = torch.optim.Adam([*encoder.parameters(), *heads.parameters()], lr=3e-3)
    first = None
    for _ in range(40):
        loss = heads.loss(encoder(ids).last_hidden_state, named)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    pooled = encoder(ids).last_hidden_state.mean(dim=1)
    position = heads.heads[list(ATTRIBUTES).index("position")](pooled).argmax(dim=1)
    assert position.tolist() == [ATTRIBUTES["position"].index(p) for p in POSITION_PHRASES]
    assert loss.item() < first / 4


def test_compact_token_embedding_writes_back_only_used_rows() -> None:
    full = nn.Embedding(100, 4)
    before = full.weight.detach().clone()
    used = torch.tensor([3, 7, 50])
    compact = train.CompactTokenEmbedding(full, used)
    assert [p.shape for p in compact.parameters()] == [torch.Size([3, 4])]
    ids = torch.tensor([[3, 50, 7]])
    assert torch.equal(compact(ids), before[ids])
    with torch.no_grad():
        compact.weight += 1
    compact.write_back()
    assert torch.allclose(full.weight[used], before[used] + 1)
    untouched = torch.ones(100, dtype=torch.bool)
    untouched[used] = False
    assert torch.equal(full.weight[untouched], before[untouched])


def test_lora_linear_starts_as_identity_and_merges_exactly() -> None:
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    x = torch.randn(5, 8)
    adapter = LoRALinear(base, rank=2, alpha=1.0)
    assert torch.equal(adapter(x), base(x))
    with torch.no_grad():
        adapter.up.weight.normal_()
    merged = nn.Linear(8, 6)
    merged.load_state_dict(base.state_dict())
    with torch.no_grad():
        merged.weight += adapter.up.weight @ adapter.down.weight * (1.0 / 2)
    assert torch.allclose(adapter(x), merged(x), atol=1e-5)


def test_lora_file_round_trip_on_a_unet(tmp_path) -> None:
    torch.manual_seed(0)
    unet = arch.build_unet().eval()
    sample, t, hidden = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, arch.TEXT_HIDDEN)
    with torch.no_grad():
        plain = unet(sample, t, hidden).sample
    adapters = inject_lora(unet)
    assert len(adapters) == 4 * 2 * 7  # q, k, v, out of attn1 and attn2 in 7 transformer blocks
    for adapter in adapters.values():
        with torch.no_grad():
            adapter.up.weight.normal_(std=0.05)
    with torch.no_grad():
        adapted = unet(sample, t, hidden).sample
    path = tmp_path / "style.safetensors"
    save_lora(adapters, path)
    remove_lora(unet, adapters)
    keys = lora_state_dict(adapters).keys()
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0.alpha" in keys
    assert merge_lora_file(unet, path, 0.0) == len(adapters)
    with torch.no_grad():
        assert torch.allclose(unet(sample, t, hidden).sample, plain, atol=1e-6)
    merge_lora_file(unet, path, 1.0)
    with torch.no_grad():
        merged = unet(sample, t, hidden).sample
    assert torch.allclose(merged, adapted, atol=2e-2)  # fp16 file
    assert not torch.allclose(merged, plain, atol=1e-3)


def test_reconstruction_loss_weighs_the_shape_more_than_the_background() -> None:
    picture = torch.full((1, 3, 16, 16), -1.0)
    picture[:, 0, 6:10, 6:10] = 1.0  # a red square on black
    wrong_shape = picture.clone()
    wrong_shape[:, 0, 6:7, 6:10] = -1.0  # four shape pixels lost
    wrong_background = picture.clone()
    wrong_background[:, 0, 0:1, 12:16] = 1.0  # four background pixels wrong
    assert train.reconstruction_loss(picture, picture) == 0
    assert train.reconstruction_loss(wrong_shape, picture) > 3 * train.reconstruction_loss(wrong_background, picture)
