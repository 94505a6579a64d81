"""The CLIP tokenizer files shipped with sdgraph reproduce the real CLIP token ids."""

from __future__ import annotations

import filecmp

from transformers import CLIPTokenizer

from sdgraph.tiny import architecture as arch

PHOTO_OF_A_CAT = [49406, 320, 1125, 539, 320, 2368, 49407]


def test_known_clip_ids_from_vocab_and_merges() -> None:
    tokenizer = CLIPTokenizer(str(arch.TOKENIZER_DIR / "vocab.json"), str(arch.TOKENIZER_DIR / "merges.txt"))
    assert tokenizer("a photo of a cat").input_ids == PHOTO_OF_A_CAT
    assert len(tokenizer) == 49408


def test_from_pretrained_folder_pads_with_end_of_text() -> None:
    tokenizer = CLIPTokenizer.from_pretrained(str(arch.TOKENIZER_DIR))
    ids = tokenizer("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[:7] == PHOTO_OF_A_CAT and set(ids[7:]) == {49407}
    assert tokenizer.model_max_length == 77
    assert tokenizer.bos_token_id == arch.BOS_TOKEN_ID and tokenizer.eos_token_id == arch.EOS_TOKEN_ID


def test_checkpoint_ships_the_same_tokenizer_files() -> None:
    folder = arch.MODELS_DIR / arch.CHECKPOINT_SUBDIR / "tokenizer"
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert filecmp.cmp(arch.TOKENIZER_DIR / name, folder / name, shallow=False), name
