"""LoRA extraction: the low-rank factors closest to a weight difference (a ModelMergeSubtract / CLIPMergeSubtract
result), written as a LoRA file in ComfyUI's key layout, and the LoraSave node.

Per weight: a truncated SVD, diff ~ (U S)[:, :rank] @ Vh[:rank], both factors clipped at the 99th percentile of
their values (outliers would dominate the fp16 file); convolutions are flattened to a matrix and the factors
reshaped back (up 1x1, down with the kernel). Keys: "diffusion_model.<LDM name>.lora_up.weight" /
".lora_down.weight" for the UNet, "text_encoders.<clip_l|clip_g|...>.transformer.<HF name>..." for text
encoders; 1-D weights (norms) and, with bias_diff, biases are stored whole as ".diff" / ".diff_b".
"""
from __future__ import annotations

from typing import Any

import torch

from sdgraph.node import Boolean, Combo, Hidden, Input, Int, Node, NodeOutput, String
from sdgraph.nodes.sd.checkpoint_writer import write_safetensors
from sdgraph.nodes.sd.comfy_keys import UNET_PREFIX
from sdgraph.types import CLIP, MODEL

CLIP_QUANTILE = 0.99
LORA_TYPES = ("standard", "full_diff")
TEXT_ENCODER_PREFIX = "text_encoders."


def extract_lora(diff: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) with up @ down the best rank-`rank` approximation of `diff`, clipped as described above."""
    out_dim, in_dim = diff.shape[:2]
    conv = diff.dim() == 4
    kernel = tuple(diff.shape[2:4]) if conv else None
    rank = min(rank, in_dim, out_dim)
    matrix = diff.float().flatten(1) if conv else diff.float()
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    up, down = u[:, :rank] * s[:rank], vh[:rank]
    limit = torch.quantile(torch.cat([up.flatten(), down.flatten()]), CLIP_QUANTILE)
    up, down = up.clamp(-limit, limit), down.clamp(-limit, limit)
    if conv:
        up, down = up.reshape(out_dim, rank, 1, 1), down.reshape(rank, in_dim, *kernel)
    return up, down


def lora_state(weights: dict[str, torch.Tensor], strip: str, prefix: str, rank: int, lora_type: str,
               bias_diff: bool) -> dict[str, torch.Tensor]:
    """The LoRA file entries for `weights` ({ComfyUI key: difference}), fp16 as ComfyUI writes them."""
    out: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        stem = prefix + key[len(strip):]
        if key.endswith(".weight"):
            stem = stem[:-len(".weight")]
            if lora_type == "full_diff" or value.dim() < 2:
                if lora_type == "full_diff" or bias_diff:
                    out[stem + ".diff"] = value.half().contiguous()
                continue
            if not torch.any(value):
                continue  # nothing to approximate (ComfyUI fails and skips it too)
            up, down = extract_lora(value, rank)
            out[stem + ".lora_up.weight"] = up.half().contiguous()
            out[stem + ".lora_down.weight"] = down.half().contiguous()
        elif bias_diff and key.endswith(".bias"):
            out[stem[:-len(".bias")] + ".diff_b"] = value.half().contiguous()
    return out


class LoraSave(Node):
    """Turn a model difference (and/or a text-encoder difference) into a LoRA file of the given rank."""

    category = "_for_testing"
    output_node = True
    experimental = True
    inputs = [String("filename_prefix", "loras/ComfyUI_extracted_lora", multiline=False),
              Int("rank", 8, min=1, max=4096, step=1), Combo("lora_type", LORA_TYPES, multiselect=False),
              Boolean("bias_diff", True), Input("model_diff", MODEL, optional=True),
              Input("text_encoder_diff", CLIP, optional=True),
              Hidden("prompt", "PROMPT"), Hidden("extra_pnginfo", "EXTRA_PNGINFO")]
    outputs = []

    def run(self, filename_prefix: str, rank: int, lora_type: str, bias_diff: bool, model_diff: Any = None,
            text_encoder_diff: Any = None, prompt: Any = None, extra_pnginfo: Any = None) -> NodeOutput:
        if model_diff is None and text_encoder_diff is None:
            return NodeOutput(ui={})
        state: dict[str, torch.Tensor] = {}
        if model_diff is not None:
            state.update(lora_state(model_diff.patched_state_dict(UNET_PREFIX), UNET_PREFIX, UNET_PREFIX, rank,
                                    lora_type, bias_diff))
        if text_encoder_diff is not None:
            state.update(lora_state(text_encoder_diff.patched_state_dict(), "", TEXT_ENCODER_PREFIX, rank,
                                    lora_type, bias_diff))
        write_safetensors(self.ctx.dirs.output, filename_prefix, state, None)
        return NodeOutput(ui={})


NODES = [LoraSave]
