"""`comfy.cli_args.args`: ComfyUI's command-line options as a started-without-flags ComfyUI holds them.

sdgraph parses its own command line; packs only read these. The defaults come from ComfyUI's parser
(tools/comfy_reference/comfy_interface.py); `cpu`, `lowvram` and the directories follow sdgraph's settings.
"""
from __future__ import annotations

import argparse
import enum
import json
from pathlib import Path


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


class PerformanceFeature(enum.Enum):
    Fp16Accumulation = "fp16_accumulation"
    Fp8MatrixMultiplication = "fp8_matrix_mult"
    CublasOps = "cublas_ops"
    AutoTune = "autotune"


def _defaults() -> argparse.Namespace:
    values = json.loads((Path(__file__).resolve().parents[2] / "data" / "cli_defaults.json").read_text())
    values.update(preview_method=LatentPreviewMethod.NoPreviews, fast=set())
    return argparse.Namespace(**values)


args = _defaults()
