"""Prompt -> CONDITIONING: weighted tokens in 77-token chunks, through one or two CLIP text encoders.

- A prompt is tokenized per emphasis segment (see `prompt_weights`) and cut into chunks of 75 tokens, each framed
  by begin/end tokens and padded to 77; a segment of fewer than 8 tokens that would straddle a cut moves whole
  into the next chunk, as ComfyUI places it. The chunks are encoded in batches of at most `ENCODE_BATCH` and
  concatenated along the sequence, so a long prompt gives a [1, 77*n, D] tensor. A prompt over the budget's
  character or token limit is refused before it is tokenised or encoded.
- Emphasis moves each weighted token's embedding away from the empty prompt's: z = (z - z_empty) * weight + z_empty;
  tokens of weight 1 keep the encoder's output exactly.
- Textual-inversion embeddings (`embedding:name`, see `embeddings`) are looked up per encoder in the CLIP's
  embedding folders; their vectors take token positions like words and replace those tokens' input embeddings
  (a forward hook on the encoder's token embedding), so position embeddings and attention treat them as tokens.
- The hidden layer is ComfyUI's `stop_at_clip_layer` (or the model default), with the final layer norm where
  the family uses it (SD 1.x/2.x). SDXL concatenates CLIP-L and OpenCLIP-G features (768+1280 = 2048 wide on the
  real model) and pools from OpenCLIP-G's projection of the first chunk.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from sdgraph.limits import Limits, check_count, current_limits
from sdgraph.nodes.sd.embeddings import EmbeddingLookup
from sdgraph.nodes.sd.model_objects import ClipModel, EncoderSpec
from sdgraph.nodes.sd.prompt_weights import parse_weights

log = logging.getLogger(__name__)

CHUNK = 77
KEEP_TOGETHER = 8  # a shorter emphasis segment is never cut across two chunks
# Chunks per encoder call: memory stays flat in the prompt's length (the hidden states of every layer are kept
# per call), and prompts of up to this many chunks are encoded exactly as in one batch.
ENCODE_BATCH = 8


def check_prompt_chars(limits: Limits, where: str, text: str) -> None:
    check_count(where, "the prompt's length in characters", len(text), limits.max_prompt_chars,
                "--max-prompt-chars")


Token = tuple[int | torch.Tensor, float]  # (token id, or an embedding vector [D]; weight)
Splices = dict[int, list[tuple[int, torch.Tensor]]]  # row -> (position, vector) to put in place of its token
PLACEHOLDER_ID = 0  # stands for an embedding vector in the ids (never end-of-text: the pooled output finds that)


def weighted_groups(tokenizer: Any, text: str, max_tokens: int | None = None,
                    where: str = "CLIPTextEncode.text", lookup: EmbeddingLookup | None = None) -> list[list[Token]]:
    """Each piece's (token, weight) list, in order: a piece is an emphasis segment, or with `lookup` a part of one
    (its text between embeddings, or an embedding's vectors). Refused as soon as the count passes `max_tokens`."""
    groups: list[list[Token]] = []
    count = 0
    for run, weight in parse_weights(text):
        for piece in lookup.pieces(run) if lookup is not None else [run]:
            if isinstance(piece, str):
                group: list[Token] = [(int(t), weight) for t in tokenizer(piece, add_special_tokens=False)["input_ids"]]
            else:
                group = [(vector, weight) for vector in piece]
            groups.append(group)
            count += len(group)
            if max_tokens is not None:
                check_count(where, "the prompt's token count (at least)", count, max_tokens, "--max-tokens")
    return groups


def weighted_tokens(tokenizer: Any, text: str, max_tokens: int | None = None,
                    where: str = "CLIPTextEncode.text") -> list[Token]:
    """(token id, weight) of each token of the prompt, in order."""
    return [token for group in weighted_groups(tokenizer, text, max_tokens, where) for token in group]


def chunk_rows(groups: list[list[Token]], bos: int, eos: int, pad: int, size: int = CHUNK) -> list[list[Token]]:
    """Rows of `size` tokens: BOS + up to size-2 tokens + EOS + padding, at least one row.

    Segments are placed in order; a segment of fewer than KEEP_TOGETHER tokens that does not fit in what is left
    of a chunk starts the next one (the rest of the chunk is padding), longer ones are cut where the chunk is full.
    """
    body = size - 2
    pieces: list[list[Token]] = [[]]
    for group in groups:
        keep_whole = len(group) < KEEP_TOGETHER
        while group:
            room = body - len(pieces[-1])
            if len(group) <= room:
                pieces[-1].extend(group)
                break
            if not keep_whole:
                pieces[-1].extend(group[:room])
                group = group[room:]
            pieces.append([])
    rows = []
    for piece in pieces:
        row: list[Token] = [(bos, 1.0), *piece, (eos, 1.0)]
        rows.append(row + [(pad, 1.0)] * (size - len(row)))
    return rows


def token_rows(rows: list[list[Token]], pad: int,
               width: int | None = None) -> tuple[torch.Tensor, torch.Tensor, Splices]:
    """Token ids and weights [n, size], and the embedding vectors to splice in per row.

    A vector whose width is not the encoder's (`width`) is dropped from its row, the tokens after it move up and
    the row is padded at its end, while the weights keep their positions: what ComfyUI does with it.
    """
    ids, weights, splices = [], [], {}
    for r, row in enumerate(rows):
        kept = [t for t, _ in row if not isinstance(t, torch.Tensor) or width is None or t.shape[-1] == width]
        if len(kept) < len(row):
            log.warning("an embedding's vectors are not %d wide, as this text encoder's tokens are: left out for "
                        "it (%d positions)", width, len(row) - len(kept))
        kept += [pad] * (len(row) - len(kept))
        ids.append([PLACEHOLDER_ID if isinstance(t, torch.Tensor) else int(t) for t in kept])
        weights.append([w for _, w in row])
        vectors = [(i, t) for i, t in enumerate(kept) if isinstance(t, torch.Tensor)]
        if vectors:
            splices[r] = vectors
    return torch.tensor(ids, dtype=torch.long), torch.tensor(weights, dtype=torch.float32), splices


def chunk_tokens(groups: list[list[Token]], bos: int, eos: int, pad: int,
                 size: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and weights [n, size] of `chunk_rows` (embedding vectors stand as PLACEHOLDER_ID)."""
    ids, weights, _ = token_rows(chunk_rows(groups, bos, eos, pad, size), pad)
    return ids, weights


def _final_norm(module: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(module, "text_model", module)
    return inner.final_layer_norm


def _encode_in_batches(module: torch.nn.Module, spec: EncoderSpec, clip_skip: int | None, ids: torch.Tensor,
                       device: torch.device, splices: Splices | None = None,
                       unprojected: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`_run_encoder` over at most ENCODE_BATCH chunks at a time, the results concatenated in order."""
    parts = []
    for start in range(0, ids.shape[0], ENCODE_BATCH):
        batch = ids[start:start + ENCODE_BATCH]
        local = {r - start: v for r, v in (splices or {}).items() if start <= r < start + len(batch)}
        with spliced(module, local):
            parts.append(_run_encoder(module, spec, clip_skip, batch, device, unprojected))
    hidden = torch.cat([h for h, _ in parts])
    pooled = None if parts[0][1] is None else torch.cat([p for _, p in parts])  # type: ignore[misc]
    return hidden, pooled


@contextmanager
def spliced(module: torch.nn.Module, splices: Splices) -> Iterator[None]:
    """While inside, the encoder's token embedding gives `splices`' vectors at their (row, position), in this
    thread's calls only."""
    if not splices:
        yield
        return
    thread = threading.get_ident()

    def put(_module: torch.nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor | None:
        if threading.get_ident() != thread:
            return None
        out = out.clone()
        for row, vectors in splices.items():
            for position, vector in vectors:
                out[row, position] = vector.to(device=out.device, dtype=out.dtype)
        return out

    handle = module.get_input_embeddings().register_forward_hook(put)
    try:
        yield
    finally:
        handle.remove()


@torch.inference_mode()
def _run_encoder(module: torch.nn.Module, spec: EncoderSpec, clip_skip: int | None, ids: torch.Tensor,
                 device: torch.device, unprojected: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hidden states [n, 77, D] at the chosen layer and the pooled output [n, P] (float32, CPU); `unprojected`:
    the pooled output before the text projection of an encoder that has one (ComfyUI's "unprojected")."""
    runner = module.text_model if unprojected and hasattr(module, "text_projection") else module
    out = runner(input_ids=ids.to(device), output_hidden_states=True)
    skip = spec.default_skip if clip_skip is None else clip_skip
    index = min(skip + spec.dropped_layers, -1)
    index = max(index, -len(out.hidden_states))
    hidden = out.hidden_states[index]
    if spec.final_norm:
        hidden = _final_norm(module)(hidden)
    pooled = getattr(out, "text_embeds", None)
    if pooled is None:
        pooled = getattr(out, "pooler_output", None)
    return hidden.float().cpu(), None if pooled is None else pooled.float().cpu()


def encode_prompt(clip: ClipModel, text: str, limits: Limits | None = None, where: str = "CLIPTextEncode.text",
                  unprojected: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The conditioning tensor [1, 77*n, D] and pooled output [1, P] of a prompt."""
    return encode_prompts(clip, [text] * len(clip.tokenizers), limits, [where] * len(clip.tokenizers), unprojected)


def encode_prompts(clip: ClipModel, texts: list[str], limits: Limits | None = None,
                   wheres: list[str] | None = None,
                   unprojected: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`encode_prompt` with one prompt per text encoder (SDXL: CLIP-L's, then OpenCLIP-G's). When the prompts
    take different numbers of chunks, the shorter ones are padded with the empty prompt's chunk, as ComfyUI pads
    them, so the encoders' features line up token for token."""
    limits = limits or current_limits()
    wheres = wheres or ["CLIPTextEncode.text"] * len(texts)
    tokens = [_prompt_chunks(clip, index, text, limits, where)
              for index, (text, where) in enumerate(zip(texts, wheres))]
    return encode_chunks(clip, tokens, unprojected)


def encode_chunks(clip: ClipModel, tokens: list[tuple[torch.Tensor, torch.Tensor, Splices]],
                  unprojected: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Encode each encoder's (chunk ids [n, 77], weights [n, 77], splices); see `encode_prompts`."""
    count = max(len(ids) for ids, _, _ in tokens)
    features, pooled = [], None
    for index, (tokenizer, spec) in enumerate(zip(clip.tokenizers, clip.specs)):
        ids, weights, splices = tokens[index]
        ids, weights = _pad_chunks(ids, weights, count, tokenizer, spec)
        module = clip.encoder(index)
        weighted = bool((weights != 1.0).any())
        if weighted:
            empty, _ = _empty_chunk(tokenizer, spec)
            ids = torch.cat([ids, empty])
        hidden, pool = _encode_in_batches(module, spec, clip.clip_skip, ids, clip.compute_device(), splices,
                                          unprojected)
        if weighted:
            hidden, z_empty = hidden[:-1], hidden[-1:]
            moved = (hidden - z_empty) * weights[..., None] + z_empty
            hidden = torch.where(weights[..., None] != 1.0, moved, hidden)  # weight 1: exactly the encoder's
        features.append(hidden.reshape(1, -1, hidden.shape[-1]))
        pooled = pool[:1] if pool is not None else pooled
    return torch.cat(features, dim=-1), pooled


def prompt_rows(clip: ClipModel, index: int, text: str, limits: Limits | None = None,
                where: str = "CLIP.tokenize") -> list[list[Token]]:
    """Encoder `index`'s 77-token chunks of one prompt as (token id or embedding vector, weight) pairs."""
    limits = limits or current_limits()
    check_prompt_chars(limits, where, text)
    tokenizer, spec = clip.tokenizers[index], clip.specs[index]
    lookup = EmbeddingLookup(clip.embedding_dirs, spec.kind, token_width(clip, index)) if clip.embedding_dirs else None
    groups = weighted_groups(tokenizer, text, limits.max_tokens, where, lookup)
    return chunk_rows(groups, tokenizer.bos_token_id, tokenizer.eos_token_id, spec.pad_id)


def _prompt_chunks(clip: ClipModel, index: int, text: str, limits: Limits,
                   where: str) -> tuple[torch.Tensor, torch.Tensor, Splices]:
    """Encoder `index`'s chunk ids, weights and the embedding vectors spliced into them."""
    rows = prompt_rows(clip, index, text, limits, where)
    return token_rows(rows, clip.specs[index].pad_id, token_width(clip, index))


def _empty_chunk(tokenizer: Any, spec: EncoderSpec) -> tuple[torch.Tensor, torch.Tensor]:
    return chunk_tokens([], tokenizer.bos_token_id, tokenizer.eos_token_id, spec.pad_id)


def _pad_chunks(ids: torch.Tensor, weights: torch.Tensor, count: int, tokenizer: Any,
                spec: EncoderSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunks followed by empty-prompt chunks up to `count` (spliced vectors keep their rows)."""
    missing = count - len(ids)
    if missing <= 0:
        return ids, weights
    empty_ids, empty_weights = _empty_chunk(tokenizer, spec)
    return (torch.cat([ids, empty_ids.repeat(missing, 1)]), torch.cat([weights, empty_weights.repeat(missing, 1)]))


def token_width(clip: ClipModel, index: int) -> int:
    """The width of encoder `index`'s token embeddings (from its config: the weights need not be loaded)."""
    return int(clip.encoders[index].module.config.hidden_size)
