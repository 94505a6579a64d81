"""Textual-inversion embeddings in prompts: `embedding:name` stands for the vectors a file in models/embeddings holds.

Read as ComfyUI reads them (`comfy/sd1_clip.py`):
- In each emphasis segment, ` embedding:` or a newline followed by `embedding:` starts a new piece (a segment may
  also start with it); the piece's first whitespace-separated word is the name, the rest is prompt text again.
  `(embedding:name:1.2)` weighs the vectors as any emphasis does. A name not found is tried once more without
  the commas around it (`embedding:name,`), and what the commas left is text.
- The name is a path under models/embeddings or any folder below it (roots first, then subfolders in name
  order), used as given when that file exists, else with `.safetensors`, `.pt`, `.bin` appended.
- A name that is not found, or a file that cannot be read, is left out of the prompt with a warning.
- Layouts: A1111's `.pt` (`string_to_param`: the first tensor), `.safetensors` with `emb_params` (any single
  tensor), SDXL pairs (`clip_l` / `clip_g`: each encoder takes its own key; `clip_h` for SD 2.x), embeddings
  bundled in a LoRA (`bundle_emb.*.string_to_param.*`, or `bundle_emb.*.<key>`), lists of dicts (every tensor as
  wide as the encoder), and old pickled `.pt` files that a weights-only load refuses (their float32 tensor
  records are read directly, the last one that is a whole number of vectors wide).
- The vectors [n, D] take n token positions; one whose width is not the encoder's is dropped for that encoder at
  encoding time (see `text_encoding.token_rows`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdgraph.nodes.sd.model_objects import ClipModel
from sdgraph.paths import Dirs, UnsafePath, safe_join

log = logging.getLogger(__name__)

PREFIX = "embedding:"
EXTENSIONS = (".safetensors", ".pt", ".bin")
_PIECE = re.compile(r" embedding:|\nembedding:")
_RECORD = re.compile(r"(^|/)data/\d+$")

Piece = str | torch.Tensor  # text to tokenize, or an embedding's vectors [n, D]


@dataclass(frozen=True)
class EmbeddingLookup:
    """Where embeddings are found and which of a file's tensors one encoder takes."""

    roots: tuple[Path, ...]
    key: str  # the encoder kind: "clip_l", "clip_h" or "clip_g"
    width: int  # the encoder's token embedding width

    def pieces(self, segment: str) -> list[Piece]:
        """The texts and embedding vectors of one emphasis segment, in order."""
        out: list[Piece] = []
        for word in split_pieces(segment):
            if word.startswith(PREFIX):
                name = word[len(PREFIX):].strip("\n")
                vectors, word = self._take(name)
                if vectors is not None:
                    out.append(vectors)
                if not word:
                    continue
            out.append(word)
        return out

    def _take(self, text: str) -> tuple[torch.Tensor | None, str]:
        """The vectors named by the first word of `text`, and the text left after it."""
        words = text.split()
        if not words:
            log.warning("embedding: with no name after it, ignoring it")
            return None, ""
        name, rest = words[0], " ".join(words[1:])
        vectors = self.find(name)
        if vectors is None:
            stripped = name.strip(",")
            if len(stripped) < len(name):
                # as ComfyUI: what lies past the stripped name's length goes back to the text
                vectors, rest = self.find(stripped), f"{name[len(stripped):]} {rest}"
        if vectors is None:
            log.warning("embedding:%s not found in models/embeddings (looked in %s), ignoring it", name,
                        ", ".join(str(r) for r in self.roots))
        return vectors, rest

    def find(self, name: str) -> torch.Tensor | None:
        """The vectors [n, D] (float32) of the embedding called `name`, or None when there is none to read."""
        for folder in _folders(self.roots):
            try:
                path = safe_join(folder, name)
            except UnsafePath:
                continue
            candidates = [path] if path.is_file() else [path.with_name(path.name + ext) for ext in EXTENSIONS]
            found = next((c for c in candidates if c.is_file()), None)
            if found is not None:
                return read_vectors(found, self.key, self.width)
        return None


def with_embeddings(clip: ClipModel, dirs: Dirs) -> ClipModel:
    """The CLIP reading `embedding:name` from models/embeddings of `dirs` (ComfyUI's loaders give it that)."""
    return dataclasses.replace(clip, embedding_dirs=tuple(dirs.model_roots("embeddings")))


def split_pieces(segment: str) -> list[str]:
    """The segment cut before each ` embedding:` / newline + `embedding:`; empty pieces dropped."""
    parts = _PIECE.split(segment)
    return [p for p in [parts[0], *(PREFIX + p for p in parts[1:])] if p]


def _folders(roots: tuple[Path, ...]) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        if root.is_dir():
            out.append(root)
            out.extend(sorted(Path(d) / s for d, subs, _ in os.walk(root, followlinks=True) for s in subs))
    return out


def read_vectors(path: Path, key: str, width: int) -> torch.Tensor | None:
    """An embedding file's vectors for the encoder `key` of width `width`; None (with a warning) if unreadable."""
    try:
        data = _read(path, width)
        vectors = data if isinstance(data, torch.Tensor) else pick_vectors(data, key, width)
    except Exception as exc:  # a broken file leaves the prompt without it, as ComfyUI does
        log.warning("embedding %s could not be read (%s: %s), ignoring it", path.name, type(exc).__name__, exc)
        return None
    if not isinstance(vectors, torch.Tensor) or not vectors.is_floating_point() or vectors.dim() == 0:
        log.warning("embedding %s holds no vectors, ignoring it", path.name)
        return None
    return vectors.detach().float().reshape(-1, vectors.shape[-1])


def _read(path: Path, width: int) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        if not zipfile.is_zipfile(path):
            raise
        return _tensor_records(path, width)


def _tensor_records(path: Path, width: int) -> torch.Tensor:
    """From a zip-format pickle the weights-only loader refuses: the last float32 tensor record holding a whole
    number of `width`-wide vectors."""
    with zipfile.ZipFile(path) as archive:
        for name in reversed([n for n in archive.namelist() if _RECORD.search(n)]):
            data = archive.read(name)
            count = len(data) // 4
            if count >= width and count % width == 0:
                return torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(-1, width).clone()
    raise ValueError(f"no tensor of {width}-wide float32 vectors in the archive")


def pick_vectors(data: Any, key: str, width: int) -> Any:
    """The tensor an encoder takes from a loaded embedding file (ComfyUI's order of layouts)."""
    if isinstance(data, dict) and "string_to_param" in data:
        return next(iter(data["string_to_param"].values()))
    if isinstance(data, list):
        rows = [t.reshape(-1, t.shape[-1]) for item in data for t in item.values()
                if isinstance(t, torch.Tensor) and t.shape[-1] == width]
        return torch.cat(rows) if rows else None
    if not isinstance(data, dict):
        return None
    if key in data:
        return data[key]
    for suffix in (".string_to_param.*", f".{key}"):
        bundled = [v for k, v in data.items() if k.startswith("bundle_emb.") and k.endswith(suffix)]
        if bundled:
            return torch.cat(bundled)
    return next(iter(data.values()), None)
