"""Regenerate sdgraph/data/clip_tokenizer/ from the CLIP BPE merges file that open_clip ships.

The generated files (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json) are committed, so
open_clip is only needed to run this script, never at runtime.  The construction is the standard CLIP one:
the first 48,894 merges of the BPE file, then a vocabulary of the 256 byte symbols, the same symbols with the
end-of-word marker '</w>', one token per merge and the two special tokens: 49,408 ids in all.

Usage: python tools/make_clip_tokenizer.py [--bpe PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "sdgraph" / "data" / "clip_tokenizer"
VOCAB_SIZE = 49408
NUM_MERGES = VOCAB_SIZE - 256 * 2 - 2  # 48894
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"


def default_bpe_path() -> Path:
    """The BPE file inside the installed open_clip package, found without importing it (its import needs more)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise SystemExit("open_clip is not installed: pass --bpe PATH to bpe_simple_vocab_16e6.txt.gz")
    return Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes)}


def read_merges(bpe_path: Path) -> list[tuple[str, str]]:
    """The merge rules CLIP uses: skip the version header line, keep the first NUM_MERGES rules."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    rules = lines[1 : NUM_MERGES + 1]
    merges = [tuple(rule.split()) for rule in rules]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"unexpected BPE file layout in {bpe_path}")
    return merges  # type: ignore[return-value]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START_TOKEN, END_TOKEN]
    if len(tokens) != VOCAB_SIZE:
        raise ValueError(f"vocabulary has {len(tokens)} tokens, expected {VOCAB_SIZE}")
    return {token: index for index, token in enumerate(tokens)}


def write_files(out_dir: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merge_lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (out_dir / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    special = {
        "bos_token": START_TOKEN,
        "eos_token": END_TOKEN,
        "unk_token": END_TOKEN,
        "pad_token": END_TOKEN,
    }
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special,
    }
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bpe", type=Path, default=None, help="path of bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    merges = read_merges(args.bpe or default_bpe_path())
    vocab = build_vocab(merges)
    write_files(args.out, vocab, merges)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
