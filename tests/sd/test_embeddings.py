"""Textual-inversion embeddings in prompts, read and placed as ComfyUI places them: `embedding:name` puts the
file's vectors at its token positions, so the encoding is what an encoder whose vocabulary holds those vectors as
extra tokens gives (computed here independently, by growing a copy's token table), positions before them are
untouched (CLIP attends causally), weights apply to them, and a missing name is left out with a warning."""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from sdgraph.nodes.sd.embeddings import EmbeddingLookup, split_pieces, with_embeddings
from sdgraph.nodes.sd.text_encoding import _final_norm, chunk_rows, encode_prompt, token_rows, weighted_groups
from sdgraph.paths import Dirs

from embedding_files import PROMPTS, embedding_vectors, write_embeddings
from key_lists import DATA
from tiny_models import TEXT

VOCAB = 49408
BOS, EOS = 49406, 49407


@pytest.fixture(scope="module")
def vectors() -> dict[str, torch.Tensor]:
    return embedding_vectors()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, vectors: dict[str, torch.Tensor]) -> Dirs:
    base = tmp_path_factory.mktemp("embeddings_home")
    write_embeddings(base / "models" / "embeddings", vectors)
    return Dirs(base=base, extra_model_roots=[])


def _tokens(clip: Any, text: str, index: int = 0) -> list[int]:
    return clip.tokenizers[index](text, add_special_tokens=False)["input_ids"]


def _row(pieces: list[Any], pad: int) -> torch.Tensor:
    """BOS + pieces (token ids, or extra-vocabulary ids) + EOS + padding: one 77-token row, built by hand."""
    ids = [BOS, *pieces, EOS]
    return torch.tensor([ids + [pad] * (77 - len(ids))])


def _reference(clip: Any, index: int, ids: torch.Tensor, extra: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """The encoder's hidden state for `ids` with `extra` as vocabulary entries VOCAB, VOCAB+1, ...: a copy of the
    encoder whose token table is grown by those rows (the classic way of adding textual-inversion tokens)."""
    module = copy.deepcopy(clip.encoders[index].module)
    table = module.get_input_embeddings()
    grown = torch.nn.Embedding(VOCAB + len(extra), table.embedding_dim)
    with torch.no_grad():
        grown.weight.copy_(torch.cat([table.weight, extra.to(table.weight.dtype)]))
    module.set_input_embeddings(grown)
    spec = clip.specs[index]
    with torch.inference_mode():
        out = module(input_ids=ids, output_hidden_states=True)
    hidden = out.hidden_states[spec.default_skip]
    if spec.final_norm:
        hidden = _final_norm(module)(hidden)
    return hidden, getattr(out, "text_embeds", None)


def test_pieces_are_cut_where_comfyui_cuts_them():
    assert split_pieces("a embedding:x b\nembedding:y") == ["a", "embedding:x b", "embedding:y"]
    assert split_pieces("embedding:x, c") == ["embedding:x, c"]
    assert split_pieces("a,embedding:x") == ["a,embedding:x"]  # no space before it: text
    assert split_pieces(" embedding:x") == ["embedding:x"]


def test_an_embedding_takes_its_token_positions(sd1, home, vectors):
    _, clip, _ = sd1
    clip = with_embeddings(clip, home)
    got, _ = encode_prompt(clip, "a photo of embedding:cat on a beach")
    head, tail = _tokens(clip, "a photo of"), _tokens(clip, "on a beach")
    ids = _row([*head, VOCAB, VOCAB + 1, *tail], EOS)
    expected, _ = _reference(clip, 0, ids, vectors["cat"])
    assert torch.allclose(got, expected, atol=1e-5, rtol=0)
    plain, _ = encode_prompt(clip, "a photo of on a beach")
    k = 1 + len(head)  # the first embedding position
    assert torch.equal(got[:, :k], plain[:, :k]), "the tokens before it are untouched (causal attention)"
    assert (got[:, k:k + 2] - plain[:, k:k + 2]).abs().min() > 1e-3


@pytest.mark.parametrize("text,name", [("embedding:style.safetensors", "style"), ("embedding:deep", "deep"),
                                       ("embedding:styles/nested/deep", "deep"), ("embedding:old", "old"),
                                       ("embedding:long", "long")])
def test_names_extensions_subfolders_and_old_pickles(sd1, home, vectors, text, name):
    _, clip, _ = sd1
    lookup = EmbeddingLookup(tuple(home.model_roots("embeddings")), "clip_l", TEXT)
    groups = weighted_groups(clip.tokenizers[0], f"a {text} b", lookup=lookup)
    assert len(groups) == 3 and all(torch.equal(t, v) for (t, _), v in zip(groups[1], vectors[name]))
    assert [w for _, w in groups[1]] == [1.0] * len(vectors[name])


def test_an_embeddings_weight_moves_its_vectors_as_emphasis_does(sd1, home, vectors):
    _, clip, _ = sd1
    clip = with_embeddings(clip, home)
    plain, _ = encode_prompt(clip, "a embedding:cat b")
    weighted, _ = encode_prompt(clip, "a (embedding:cat:1.2) b")
    empty, _ = encode_prompt(clip, "")
    k = 1 + len(_tokens(clip, "a"))
    expected = empty[:, k:k + 2] + (plain[:, k:k + 2] - empty[:, k:k + 2]) * 1.2
    assert torch.allclose(weighted[:, k:k + 2], expected, atol=1e-5, rtol=0)
    assert torch.equal(weighted[:, :k], plain[:, :k]) and torch.equal(weighted[:, k + 2:], plain[:, k + 2:])


def test_a_missing_embedding_is_left_out_with_a_warning(sd1, home, caplog):
    _, clip, _ = sd1
    clip = with_embeddings(clip, home)
    with caplog.at_level(logging.WARNING):
        got, _ = encode_prompt(clip, "a photo of embedding:nothing on a beach")
    assert "embedding:nothing not found" in caplog.text
    assert torch.equal(got, encode_prompt(clip, "a photo of on a beach")[0])
    with caplog.at_level(logging.WARNING):
        broken, _ = encode_prompt(clip, "a embedding:broken b")
    assert "embedding broken.safetensors could not be read" in caplog.text
    assert torch.equal(broken, encode_prompt(clip, "a b")[0])


def test_commas_after_the_name_are_text(sd1, home, vectors):
    _, clip, _ = sd1
    lookup = EmbeddingLookup(tuple(home.model_roots("embeddings")), "clip_l", TEXT)
    groups = weighted_groups(clip.tokenizers[0], "embedding:cat, a dog", lookup=lookup)
    assert torch.equal(torch.stack([t for t, _ in groups[0]]), vectors["cat"])
    assert [t for t, _ in groups[1]] == _tokens(clip, ", a dog")


def test_without_embedding_folders_the_name_is_text(sd1):
    _, clip, _ = sd1
    assert clip.embedding_dirs == ()
    (group,) = weighted_groups(clip.tokenizers[0], "embedding:cat")
    assert [t for t, _ in group] == _tokens(clip, "embedding:cat")


def test_sdxl_encoders_take_their_own_vectors_of_a_pair(sdxl, home, vectors):
    _, clip, _ = sdxl
    clip = with_embeddings(clip, home)
    got, pooled = encode_prompt(clip, "a embedding:pair b")
    for index, key in enumerate(("pair_l", "pair_g")):
        pad = clip.specs[index].pad_id
        ids = _row([*_tokens(clip, "a", index), VOCAB, VOCAB + 1, *_tokens(clip, "b", index)], pad)
        expected, expected_pooled = _reference(clip, index, ids, vectors[key])
        assert torch.allclose(got[..., index * TEXT:(index + 1) * TEXT], expected, atol=1e-5, rtol=0), key
    assert torch.allclose(pooled, expected_pooled, atol=1e-5, rtol=0)


def test_vectors_of_another_width_are_dropped_for_that_encoder(sd1, home, caplog):
    _, clip, _ = sd1
    clip = with_embeddings(clip, home)
    rows = chunk_rows([[(1, 1.0)], [(torch.zeros(TEXT // 2), 1.3)] * 2, [(2, 1.0), (3, 0.5)]], BOS, EOS, EOS)
    with caplog.at_level(logging.WARNING):
        ids, weights, splices = token_rows(rows, EOS, TEXT)
    assert "not 64 wide" in caplog.text and splices == {}
    assert ids[0, :6].tolist() == [BOS, 1, 2, 3, EOS, EOS] and ids.shape == (1, 77)
    assert weights[0, :6].tolist() == pytest.approx([1.0, 1.0, 1.3, 1.3, 1.0, 0.5]), "weights keep their positions"
    narrow, _ = encode_prompt(clip, "a embedding:narrow b")
    assert torch.equal(narrow, encode_prompt(clip, "a b")[0]), "the row closes up and is padded at its end"


def _named(token: Any, vectors: dict[str, torch.Tensor]) -> Any:
    if not isinstance(token, torch.Tensor):
        return int(token)
    return next(f"{name}#{row}" for name, table in vectors.items() for row in range(len(table))
                if table[row].shape == token.shape and torch.equal(table[row], token))


@pytest.mark.parametrize("kind", ["clip_l", "clip_g"])
def test_prompts_tokenize_as_comfyui_tokenizes_them(sdxl, home, vectors, kind):
    """Against ComfyUI's SDTokenizer over the same files (tools/comfy_reference/embedding_tokens.py)."""
    reference = json.loads((DATA / "embedding_tokens.json").read_text())["prompts"]
    assert sorted(reference) == sorted(PROMPTS)
    _, clip, _ = sdxl
    index = ["clip_l", "clip_g"].index(kind)
    tokenizer, pad = clip.tokenizers[index], clip.specs[index].pad_id
    lookup = EmbeddingLookup(tuple(home.model_roots("embeddings")), kind, TEXT)
    for prompt in PROMPTS:
        rows = chunk_rows(weighted_groups(tokenizer, prompt, lookup=lookup), BOS, EOS, pad)
        ours = [[[_named(t, vectors), pytest.approx(w)] for t, w in row] for row in rows]
        assert ours == reference[prompt][kind], prompt
