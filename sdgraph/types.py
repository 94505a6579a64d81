"""Socket type names shared with the Stable Diffusion node ecosystem, and the rules for wiring them."""
from __future__ import annotations

MODEL = "MODEL"
CLIP = "CLIP"
VAE = "VAE"
CONDITIONING = "CONDITIONING"
LATENT = "LATENT"
IMAGE = "IMAGE"
MASK = "MASK"
CONTROL_NET = "CONTROL_NET"
INT = "INT"
FLOAT = "FLOAT"
STRING = "STRING"
BOOLEAN = "BOOLEAN"
COMBO = "COMBO"
ANY = "*"

PRIMITIVE_TYPES = frozenset({INT, FLOAT, STRING, BOOLEAN, COMBO})
KNOWN_TYPES = frozenset(
    {MODEL, CLIP, VAE, CONDITIONING, LATENT, IMAGE, MASK, CONTROL_NET, INT, FLOAT, STRING, BOOLEAN, COMBO}
)


def _alternatives(type_name: str) -> frozenset[str]:
    return frozenset(part.strip() for part in type_name.split(","))


def types_compatible(output_type: str, input_type: str) -> bool:
    """Whether an output socket of `output_type` may feed an input socket of `input_type`.

    `*` matches anything; "A,B" on either side means any of A or B (the ComfyUI convention).
    """
    if output_type == input_type or ANY in (output_type, input_type):
        return True
    return not _alternatives(output_type).isdisjoint(_alternatives(input_type))
