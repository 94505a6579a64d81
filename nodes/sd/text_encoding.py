"""Prompt -> CONDITIONING: weighted tokens in 77-token chunks, through one or two CLIP text encoders.

- A prompt is tokenized per emphasis segment (see `prompt_weights`) and cut into chunks of 75 tokens, each framed
  by begin/end tokens and padded to 77; a segment of fewer than 8 tokens that would straddle a cut moves whole
  into the next chunk, as ComfyUI places it. The chunks are encoded in batches of at most `ENCODE_BATCH` and
  concatenated along the sequence, so a long prompt gives a [1, 77*n, D] tensor. A prompt over the budget's
  character or token limit is refused before it is tokenised or encoded.
- Emphasis moves each weighted token's embedding away from the empty prompt's: z = (z - z_empty) * weight + z_empty;
  tokens of weight 1 keep the encoder's output exactly.
- The hidden layer is ComfyUI's `stop_at_clip_layer` (or the model default), with the final layer norm where
  the family uses it (SD 1.x/2.x). SDXL concatenates CLIP-L and OpenCLIP-G features (768+1280 = 2048 wide on the
  real model) and pools from OpenCLIP-G's projection of the first chunk.
"""
from __future__ import annotations

from typing import Any

import torch

from sdgraph.limits import Limits, check_count, current_limits
from sdgraph.nodes.sd.model_objects import ClipModel, EncoderSpec
from sdgraph.nodes.sd.prompt_weights import parse_weights

CHUNK = 77
KEEP_TOGETHER = 8  # a shorter emphasis segment is never cut across two chunks
# Chunks per encoder call: memory stays flat in the prompt's length (the hidden states of every layer are kept
# per call), and prompts of up to this many chunks are encoded exactly as in one batch.
ENCODE_BATCH = 8


def check_prompt_chars(limits: Limits, where: str, text: str) -> None:
    check_count(where, "the prompt's length in characters", len(text), limits.max_prompt_chars,
                "--max-prompt-chars")


Token = tuple[int, float]  # (token id, weight)


def weighted_groups(tokenizer: Any, text: str, max_tokens: int | None = None,
                    where: str = "CLIPTextEncode.text") -> list[list[Token]]:
    """Each emphasis segment's (token id, weight) list, in order; refused as soon as the count passes
    `max_tokens`."""
    groups: list[list[Token]] = []
    count = 0
    for run, weight in parse_weights(text):
        ids = tokenizer(run, add_special_tokens=False)["input_ids"]
        groups.append([(int(t), weight) for t in ids])
        count += len(ids)
        if max_tokens is not None:
            check_count(where, "the prompt's token count (at least)", count, max_tokens, "--max-tokens")
    return groups


def weighted_tokens(tokenizer: Any, text: str, max_tokens: int | None = None,
                    where: str = "CLIPTextEncode.text") -> list[Token]:
    """(token id, weight) of each token of the prompt, in order."""
    return [token for group in weighted_groups(tokenizer, text, max_tokens, where) for token in group]


def chunk_tokens(groups: list[list[Token]], bos: int, eos: int, pad: int,
                 size: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and weights [n, size]: BOS + up to size-2 tokens + EOS + padding, at least one chunk.

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
    ids, weights = [], []
    for piece in pieces:
        row = [bos] + [t for t, _ in piece] + [eos]
        w = [1.0] + [wt for _, wt in piece] + [1.0]
        ids.append(row + [pad] * (size - len(row)))
        weights.append(w + [1.0] * (size - len(w)))
    return torch.tensor(ids, dtype=torch.long), torch.tensor(weights, dtype=torch.float32)


def _final_norm(module: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(module, "text_model", module)
    return inner.final_layer_norm


def _encode_in_batches(module: torch.nn.Module, spec: EncoderSpec, clip_skip: int | None, ids: torch.Tensor,
                       device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`_run_encoder` over at most ENCODE_BATCH chunks at a time, the results concatenated in order."""
    parts = [_run_encoder(module, spec, clip_skip, batch, device) for batch in ids.split(ENCODE_BATCH)]
    hidden = torch.cat([h for h, _ in parts])
    pooled = None if parts[0][1] is None else torch.cat([p for _, p in parts])  # type: ignore[misc]
    return hidden, pooled


@torch.inference_mode()
def _run_encoder(module: torch.nn.Module, spec: EncoderSpec, clip_skip: int | None, ids: torch.Tensor,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hidden states [n, 77, D] at the chosen layer and the pooled output [n, P] (float32, CPU)."""
    out = module(input_ids=ids.to(device), output_hidden_states=True)
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


def encode_prompt(clip: ClipModel, text: str, limits: Limits | None = None,
                  where: str = "CLIPTextEncode.text") -> tuple[torch.Tensor, torch.Tensor | None]:
    """The conditioning tensor [1, 77*n, D] and pooled output [1, P] of a prompt."""
    return encode_prompts(clip, [text] * len(clip.tokenizers), limits, [where] * len(clip.tokenizers))


def encode_prompts(clip: ClipModel, texts: list[str], limits: Limits | None = None,
                   wheres: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`encode_prompt` with one prompt per text encoder (SDXL: CLIP-L's, then OpenCLIP-G's). When the prompts
    take different numbers of chunks, the shorter ones are padded with the empty prompt's chunk, as ComfyUI pads
    them, so the encoders' features line up token for token."""
    limits = limits or current_limits()
    wheres = wheres or ["CLIPTextEncode.text"] * len(texts)
    for text, where in zip(texts, wheres):
        check_prompt_chars(limits, where, text)
    tokens = [_prompt_chunks(tok, spec, text, limits, where)
              for tok, spec, text, where in zip(clip.tokenizers, clip.specs, texts, wheres)]
    count = max(len(ids) for ids, _ in tokens)
    features, pooled = [], None
    for index, (tokenizer, spec) in enumerate(zip(clip.tokenizers, clip.specs)):
        ids, weights = _pad_chunks(*tokens[index], count, tokenizer, spec)
        module = clip.encoder(index)
        weighted = bool((weights != 1.0).any())
        if weighted:
            empty, _ = _empty_chunk(tokenizer, spec)
            ids = torch.cat([ids, empty])
        hidden, pool = _encode_in_batches(module, spec, clip.clip_skip, ids, clip.compute_device())
        if weighted:
            hidden, z_empty = hidden[:-1], hidden[-1:]
            moved = (hidden - z_empty) * weights[..., None] + z_empty
            hidden = torch.where(weights[..., None] != 1.0, moved, hidden)  # weight 1: exactly the encoder's
        features.append(hidden.reshape(1, -1, hidden.shape[-1]))
        pooled = pool[:1] if pool is not None else pooled
    return torch.cat(features, dim=-1), pooled


def _prompt_chunks(tokenizer: Any, spec: EncoderSpec, text: str, limits: Limits,
                   where: str) -> tuple[torch.Tensor, torch.Tensor]:
    groups = weighted_groups(tokenizer, text, limits.max_tokens, where)
    return chunk_tokens(groups, tokenizer.bos_token_id, tokenizer.eos_token_id, spec.pad_id)


def _empty_chunk(tokenizer: Any, spec: EncoderSpec) -> tuple[torch.Tensor, torch.Tensor]:
    return chunk_tokens([], tokenizer.bos_token_id, tokenizer.eos_token_id, spec.pad_id)


def _pad_chunks(ids: torch.Tensor, weights: torch.Tensor, count: int, tokenizer: Any,
                spec: EncoderSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunks followed by empty-prompt chunks up to `count`."""
    missing = count - len(ids)
    if missing <= 0:
        return ids, weights
    empty_ids, empty_weights = _empty_chunk(tokenizer, spec)
    return (torch.cat([ids, empty_ids.repeat(missing, 1)]), torch.cat([weights, empty_weights.repeat(missing, 1)]))
