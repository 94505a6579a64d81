"""Prompts to conditioning: emphasis parsing, 77-token chunks, layers, SDXL's two encoders."""
from __future__ import annotations

import torch

from sdgraph.nodes.sd.conditioning import TextEncode
from sdgraph.nodes.sd.loaders import CLIPSetLastLayer
from sdgraph.nodes.sd.prompt_weights import parse_weights
from sdgraph.nodes.sd.text_encoding import chunk_tokens, weighted_groups, weighted_tokens

from conftest import call


def test_emphasis_syntax():
    assert parse_weights("a (cat:1.5) b") == [("a ", 1.0), ("cat", 1.5), (" b", 1.0)]
    runs = dict((t, round(w, 4)) for t, w in parse_weights("((x)) (y (z:2):0.5)"))
    assert runs == {"x": 1.21, " ": 1.0, "y ": 0.5, "z": 2.0}  # an explicit weight is absolute, not multiplied
    assert parse_weights(r"\(literal\) (open") == [("(literal) ", 1.0), ("(open", 1.0)]
    assert parse_weights("(a:b)") == [("a:b", 1.1)]
    assert parse_weights("((a:1.5))") == [("a", 1.5)]


def test_emphasis_edge_cases_read_as_comfyui_reads_them():
    assert parse_weights("a (b:1.0) c") == [("a ", 1.0), ("b", 1.0), (" c", 1.0)]  # segments are not merged
    assert parse_weights("(:1.5)") == [(":1.5", 1.1)]  # a colon first in the group is text
    assert parse_weights("(a:1.2 (b))") == [("a:1.2 ", 1.1), ("b", 1.1 * 1.1)]  # not a number: the colon is text
    assert parse_weights("a) (b) c") == [("a) (b) c", 1.0)]  # after a stray ")" brackets are text
    assert parse_weights("a) ((b)) c") == [("a) (", 1.0), ("b", 1.1), (") c", 1.0)]
    assert parse_weights("(a (b) c") == [("(a (b) c", 1.0)]  # never closed: text
    assert parse_weights("((a)") == [("(a", 1.1)]  # never closed but ends in ")": read as a group
    assert parse_weights("(a:1.3)(b)") == [("a", 1.3), ("b", 1.1)]
    assert parse_weights("()") == [] and parse_weights("") == []


def test_chunks_frame_and_pad():
    ids, weights = chunk_tokens([[(5, 2.0)] * 80], bos=1, eos=2, pad=0)
    assert ids.shape == (2, 77) and ids[0, 0] == 1 and ids[0, 76] == 2 and ids[1, 6] == 2 and ids[1, 7] == 0
    assert weights[0, 1] == 2.0 and weights[0, 0] == 1.0


def test_a_short_segment_at_the_cut_moves_whole_into_the_next_chunk():
    plain = [(5, 1.0)] * 72
    ids, weights = chunk_tokens([plain, [(7, 1.3)] * 7], bos=1, eos=2, pad=0)
    assert ids.shape == (2, 77)
    assert ids[0, 73] == 2 and (ids[0, 74:] == 0).all()  # 72 tokens, EOS, padding where the segment did not fit
    assert (ids[1, 1:8] == 7).all() and (weights[1, 1:8] == 1.3).all() and ids[1, 8] == 2
    ids, _ = chunk_tokens([plain, [(7, 1.3)] * 8], bos=1, eos=2, pad=0)  # 8 tokens: cut where the chunk is full
    assert (ids[0, 73:76] == 7).all() and ids[0, 76] == 2 and (ids[1, 1:6] == 7).all() and ids[1, 6] == 2
    ids, _ = chunk_tokens([plain, [(7, 1.3)] * 3], bos=1, eos=2, pad=0)  # fits exactly: one chunk
    assert ids.shape == (1, 77) and (ids[0, 73:76] == 7).all()


def test_text_encode_shapes_and_pooled(ctx, sd1):
    _, clip, _ = sd1
    ((cond, extras),) = call(TextEncode, ctx, text="a red circle", clip=clip)[0]
    assert cond.shape == (1, 77, 64) and cond.dtype == torch.float32
    assert extras["pooled_output"].shape == (1, 64)


def test_long_prompt_is_chunked_and_first_chunk_kept(ctx, sd1):
    _, clip, _ = sd1
    words = " ".join(f"word{i}" for i in range(60))  # well over 75 tokens
    tokens = weighted_tokens(clip.tokenizers[0], words)
    assert len(tokens) > 75
    cond = call(TextEncode, ctx, text=words, clip=clip)[0][0][0]
    assert cond.shape[1] == 77 * ((len(tokens) + 74) // 75)
    first = clip.tokenizers[0].decode([t for t, _ in tokens[:75]])
    alone = call(TextEncode, ctx, text=first, clip=clip)[0][0][0]
    assert torch.allclose(cond[:, :77], alone, atol=1e-5)


def test_emphasis_changes_only_weighted_tokens(ctx, sd1):
    _, clip, _ = sd1
    plain = call(TextEncode, ctx, text="a red circle", clip=clip)[0][0][0]
    same = call(TextEncode, ctx, text="a (red:1.0) circle", clip=clip)[0][0][0]
    strong = call(TextEncode, ctx, text="a (red:1.5) circle", clip=clip)[0][0][0]
    assert torch.equal(plain, same)
    changed = (strong - plain).abs().amax(dim=-1)[0]
    assert changed[2] > 1e-3  # BOS, "a", "red": the weighted token moved
    assert changed[1] < 1e-5 and changed[3] < 1e-5


def test_clip_set_last_layer(ctx, sd1):
    _, clip, _ = sd1
    (skipped,) = call(CLIPSetLastLayer, ctx, clip=clip, stop_at_clip_layer=-2)
    assert clip.clip_skip is None and skipped.clip_skip == -2
    a = call(TextEncode, ctx, text="a red circle", clip=clip)[0][0][0]
    b = call(TextEncode, ctx, text="a red circle", clip=skipped)[0][0][0]
    assert not torch.allclose(a, b)


def test_sdxl_uses_both_encoders(ctx, sdxl):
    _, clip, _ = sdxl
    ((cond, extras),) = call(TextEncode, ctx, text="a red circle", clip=clip)[0]
    assert cond.shape == (1, 77, 128) and extras["pooled_output"].shape == (1, 64)


def test_emphasis_parsing_is_linear_in_unmatched_and_nested_brackets():
    import time

    start = time.process_time()
    assert parse_weights("(" * 100_000) == [("(" * 100_000, 1.0)]
    nested = parse_weights("(" * 5000 + "x:1.7" + ")" * 5000)  # deeper than Python's recursion limit
    assert nested == [("x", 1.7)]
    nested = parse_weights("(" * 5000 + "x" + ")" * 5000)
    assert len(nested) == 1 and nested[0][0] == "x" and abs(nested[0][1] / 1.1 ** 5000 - 1) < 1e-6
    colons = parse_weights("(" * 20_000 + "x:" + "y" * 100_000 + ")" * 20_000)  # one colon every group looks at
    assert colons[0][0].startswith("x:y") and len(colons) == 1
    assert time.process_time() - start < 2.0


def test_the_parity_long_prompt_straddles_both_cuts(sd1):
    """The parity suite's long prompt (tests/parity/cases.py) exercises both chunking rules."""
    from tests.parity.cases import LONG_PROMPT

    tokenizer = sd1[1].tokenizers[0]
    ids, weights = chunk_tokens(weighted_groups(tokenizer, LONG_PROMPT), tokenizer.bos_token_id,
                                tokenizer.eos_token_id, 49407)
    assert ids.shape[0] == 3
    assert (weights[0] == 1.0).all()  # the short weighted run did not fit: it moved whole
    assert (weights[1, 1:4] == 1.3).all() and (weights[1, 64:76] == 0.8).all() and (weights[2, 1:4] == 0.8).all()
