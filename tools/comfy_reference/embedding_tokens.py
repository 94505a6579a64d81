"""Record how ComfyUI tokenizes prompts with textual-inversion embeddings (dev tooling).

Writes the embedding files of `tests/sd/embedding_files.py` to a temp folder, runs ComfyUI's own
`SDTokenizer.tokenize_with_weights` (its SD 1.x CLIP-L tokenizer, and SDXL's OpenCLIP-G one, which pads with 0)
over `PROMPTS` with that folder as its embedding directory, and stores each row of (token, weight) pairs; an
embedding vector is stored as "name#row" (the file's vectors it equals). `tests/sd/test_embeddings.py` tokenizes
the same prompts over the same files with sdgraph and compares.

    python tools/comfy_reference/embedding_tokens.py --comfyui /tmp/comfyui --out tests/sd/data/embedding_tokens.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "sd"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from embedding_files import PROMPTS, WIDTH, embedding_vectors, write_embeddings  # noqa: E402
from make_references import write_torchvision_stand_in  # noqa: E402

# ComfyUI's tokenizer settings per text encoder: (embedding_key, pad_with_end)
TOKENIZERS = {"clip_l": ("clip_l", True), "clip_g": ("clip_g", False)}


def import_sd1_clip(comfyui: Path):
    scratch = Path(tempfile.mkdtemp(prefix="comfy-emb-"))
    write_torchvision_stand_in(scratch)
    sys.path[:0] = [str(scratch), str(comfyui)]
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.sd1_clip as sd1_clip
    return sd1_clip


def token_name(token, vectors) -> object:
    import torch

    if not isinstance(token, torch.Tensor):
        return int(token)
    for name, table in vectors.items():
        for row in range(table.shape[0]):
            if table[row].shape == token.shape and torch.equal(table[row], token):
                return f"{name}#{row}"
    raise ValueError("a vector that is in no embedding file")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "sd" / "data" / "embedding_tokens.json")
    args = parser.parse_args()
    sd1_clip = import_sd1_clip(args.comfyui)
    folder = Path(tempfile.mkdtemp(prefix="embeddings-"))
    vectors = embedding_vectors()
    write_embeddings(folder, vectors)
    out: dict[str, dict[str, list]] = {}
    for key, (embedding_key, pad_with_end) in TOKENIZERS.items():
        tokenizer = sd1_clip.SDTokenizer(pad_with_end=pad_with_end, embedding_directory=str(folder),
                                         embedding_size=WIDTH, embedding_key=embedding_key)
        for prompt in PROMPTS:
            rows = tokenizer.tokenize_with_weights(prompt)
            out.setdefault(prompt, {})[key] = [[[token_name(t, vectors), float(w)] for t, w in row] for row in rows]
    commit = (args.comfyui / "COMMIT").read_text().strip() if (args.comfyui / "COMMIT").is_file() else "unknown"
    args.out.write_text(json.dumps({"comfyui": commit, "prompts": out}, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {len(out)} prompts to {args.out}")


if __name__ == "__main__":
    main()
