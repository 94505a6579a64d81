"""CLIP's ComfyUI token API: tokenize gives ComfyUI's chunks, encode_from_tokens gives what encoding the prompt
gives, and edited tokens change the conditioning as their edit says."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from embedding_files import embedding_vectors, write_embeddings
from sdgraph.nodes.sd.embeddings import with_embeddings
from sdgraph.nodes.sd.text_encoding import encode_prompt
from sdgraph.paths import Dirs


def test_tokens_are_comfyuis_chunks_and_encode_as_the_prompt_does(sd1: Any) -> None:
    _, clip, _ = sd1
    tokens = clip.tokenize("a (red:1.3) circle")
    assert list(tokens) == ["l"] and len(tokens["l"]) == 1 and len(tokens["l"][0]) == 77
    first, *_, last = tokens["l"][0]
    assert first == (49406, 1.0) and last[0] == 49407  # start, then end-of-text padding
    assert sorted({w for _, w in tokens["l"][0]}) == [1.0, 1.3]
    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
    expected, expected_pooled = encode_prompt(clip, "a (red:1.3) circle")
    assert torch.equal(cond, expected) and torch.equal(pooled, expected_pooled)
    assert torch.equal(clip.encode_from_tokens(tokens), expected)
    assert clip.encode_from_tokens(tokens, return_dict=True)["pooled_output"] is not None
    [[scheduled, extras]] = clip.encode_from_tokens_scheduled(tokens)
    assert torch.equal(scheduled, expected) and torch.equal(extras["pooled_output"], expected_pooled)


def test_an_edited_weight_is_emphasis(sd1: Any) -> None:
    _, clip, _ = sd1
    tokens = clip.tokenize("a red circle")
    tokens["l"][0][2] = (tokens["l"][0][2][0], 1.3)  # "red" (after the start token and "a")
    assert torch.equal(clip.encode_from_tokens(tokens), encode_prompt(clip, "a (red:1.3) circle")[0])


def test_sdxl_has_both_encoders_and_each_may_get_its_own_text(sdxl: Any) -> None:
    _, clip, _ = sdxl
    tokens = clip.tokenize("a red circle")
    assert sorted(tokens) == ["g", "l"]
    tokens["g"] = clip.tokenize("a blue square")["g"]
    from sdgraph.nodes.sd.text_encoding import encode_prompts
    assert torch.equal(clip.encode_from_tokens(tokens), encode_prompts(clip, ["a red circle", "a blue square"])[0])


def test_embedding_vectors_travel_in_the_tokens(sd1: Any, tmp_path: Any) -> None:
    _, clip, _ = sd1
    write_embeddings(tmp_path / "models" / "embeddings", embedding_vectors())
    clip = with_embeddings(clip, Dirs(base=tmp_path, extra_model_roots=[]))
    tokens = clip.tokenize("a photo of embedding:cat on a beach")
    assert any(isinstance(token, torch.Tensor) for token, _ in tokens["l"][0])
    assert torch.equal(clip.encode_from_tokens(tokens), encode_prompt(clip, "a photo of embedding:cat on a beach")[0])


def test_malformed_tokens_get_a_clear_error(sd1: Any) -> None:
    _, clip, _ = sd1
    with pytest.raises(ValueError, match="'l' encoder needs"):
        clip.encode_from_tokens({"g": [[(1, 1.0)]]})
    with pytest.raises(ValueError, match="equal-length chunks"):
        clip.encode_from_tokens({"l": [[(49406, 1.0)] * 77, [(49406, 1.0)] * 5]})
