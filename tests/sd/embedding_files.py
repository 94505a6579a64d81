"""Textual-inversion embedding files in the layouts users have, with seeded vectors as wide as the tiny text encoders,
and prompts that use them: shared by tests/sd/test_embeddings.py and tools/comfy_reference/embedding_tokens.py
(which records how ComfyUI tokenizes the prompts over the same files)."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

WIDTH = 64  # tiny_models.TEXT
COUNTS = {"cat": 2, "style": 3, "pair_l": 2, "pair_g": 2, "deep": 1, "old": 2, "narrow": 2, "long": 10}


def embedding_vectors(seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {name: torch.randn(n, WIDTH, generator=g) for name, n in COUNTS.items()}
    out["narrow"] = out["narrow"][:, :WIDTH // 2].contiguous()  # not the encoders' width
    return out


def write_embeddings(folder: Path, vectors: dict[str, torch.Tensor]) -> None:
    (folder / "styles" / "nested").mkdir(parents=True, exist_ok=True)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors["cat"]}, "name": "cat", "step": 500,
                "sd_checkpoint": "abc", "sd_checkpoint_name": "sd15"}, str(folder / "cat.pt"))  # A1111's .pt
    save_file({"emb_params": vectors["style"]}, str(folder / "style.safetensors"))  # A1111's .safetensors
    save_file({"clip_l": vectors["pair_l"], "clip_g": vectors["pair_g"]}, str(folder / "pair.safetensors"))  # SDXL
    save_file({"emb_params": vectors["deep"][0]}, str(folder / "styles" / "nested" / "deep.safetensors"))  # 1-D
    old = torch.nn.ParameterDict({"*": torch.nn.Parameter(vectors["old"])})  # refused by a weights-only load
    torch.save({"string_to_token": {"*": 265}, "string_to_param": old}, str(folder / "old.pt"))
    save_file({"emb_params": vectors["narrow"]}, str(folder / "narrow.safetensors"))
    torch.save([{"vectors": vectors["long"]}, {"other": torch.zeros(3, 5)}], str(folder / "long.bin"))  # a list
    (folder / "broken.safetensors").write_bytes(b"not a safetensors file")


FILLER = " ".join(["red"] * 70)
# Prompts whose tokenization ComfyUI's reference records (embedding:old is left out: ComfyUI's reader of old
# pickles guesses 768- or 1024-wide vectors, which the tiny files are not)
PROMPTS = (
    "a photo of embedding:cat on a beach",
    "embedding:cat, a dog",
    "a (embedding:cat:1.2) b",
    "((embedding:style.safetensors)) x",
    "a\nembedding:deep b",
    "embedding:styles/nested/deep",
    "x embedding:missing y",
    "x embedding:missing, y",
    "x embedding:missing,y z",
    "embedding:pair",
    "a,embedding:cat",
    "embedding:cat,embedding:style",
    "embedding:narrow b",
    "embedding:long and more",
    f"{FILLER} embedding:style after the cut",
    f"{FILLER} embedding:long cut in two",
    f"{FILLER} (embedding:long:0.8)",
)
