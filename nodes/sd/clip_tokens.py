"""CLIP's token API as ComfyUI plugins call it: `clip.tokenize(text)`, then `clip.encode_from_tokens(tokens, ...)`.

Tokens are ComfyUI's: a dict by encoder ("l" for CLIP-L, "h" for SD 2.x's OpenCLIP-H, "g" for SDXL's OpenCLIP-G)
of 77-token chunks, each a list of `(token_id, weight)` pairs, where a textual-inversion vector stands in place
of its id as a tensor. A plugin may edit them (reweigh, splice chunks, give SDXL's two encoders other texts)
before encoding; encoding them gives what encoding the prompt gives.
"""
from __future__ import annotations

from typing import Any

import torch

from sdgraph.nodes.sd.model_objects import ClipModel
from sdgraph.nodes.sd.text_encoding import encode_chunks, prompt_rows, token_rows, token_width

Tokens = dict[str, list[list[tuple[Any, ...]]]]
_KEYS = {"clip_l": "l", "clip_h": "h", "clip_g": "g"}


def encoder_key(kind: str) -> str:
    return _KEYS.get(kind, kind)


def tokenize(clip: ClipModel, text: str, return_word_ids: bool = False) -> Tokens:
    tokens: Tokens = {}
    for index, spec in enumerate(clip.specs):
        rows = prompt_rows(clip, index, text)
        tokens[encoder_key(spec.kind)] = [[(token, weight, 0) if return_word_ids else (token, weight)
                                           for token, weight in row] for row in rows]
    return tokens


def encode_tokens(clip: ClipModel, tokens: Tokens) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The conditioning [1, 77*n, D] and pooled output of ComfyUI-format tokens."""
    chunks = []
    for index, spec in enumerate(clip.specs):
        key = encoder_key(spec.kind)
        rows = tokens.get(key) if isinstance(tokens, dict) else None
        if not rows or any(not row or len(row) != len(rows[0]) for row in rows):
            raise ValueError(f"CLIP.encode_from_tokens: the {key!r} encoder needs a list of equal-length chunks "
                             f"of (token, weight) pairs (tokens have {sorted(tokens) if isinstance(tokens, dict) else type(tokens).__name__})")
        pairs = [[(pair[0], float(pair[1])) for pair in row] for row in rows]
        chunks.append(token_rows(pairs, spec.pad_id, token_width(clip, index)))
    return encode_chunks(clip, chunks)
