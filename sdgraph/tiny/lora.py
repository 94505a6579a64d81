"""A hand-written LoRA for the tiny UNet: low-rank adapters, kohya-format saving and merging.

Each adapted ``nn.Linear`` computes ``W x + (alpha / rank) * up(down(x))`` where ``down`` is [rank, in] and ``up``
is [out, rank] and starts at zero, so a fresh adapter changes nothing.  Files use the key names real LoRA files
use (kohya's convention for diffusers UNet module names)::

    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight   [rank, in]
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight     [out, rank]
    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha              scalar
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sdgraph.tiny.architecture import LORA_ALPHA, LORA_RANK, lora_key_prefix, lora_target_names


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int = LORA_RANK, alpha: float = LORA_ALPHA) -> None:
        super().__init__()
        self.base = base
        self.rank = rank
        self.alpha = alpha
        self.multiplier = 1.0
        self.down = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device)
        self.up = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.multiplier * self.alpha / self.rank
        return self.base(x) + self.up(self.down(x)) * scale


def _parent_and_attr(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attr = name.rpartition(".")
    return root.get_submodule(parent_name) if parent_name else root, attr


def _set_child(parent: nn.Module, attr: str, child: nn.Module) -> None:
    if isinstance(parent, (nn.ModuleList, nn.Sequential)) and attr.isdigit():
        parent[int(attr)] = child
    else:
        setattr(parent, attr, child)


def inject_lora(unet: nn.Module, rank: int = LORA_RANK, alpha: float = LORA_ALPHA) -> dict[str, LoRALinear]:
    """Wrap every attention projection of ``unet`` in a LoRALinear, in place; returns them by module name."""
    adapters: dict[str, LoRALinear] = {}
    for name in lora_target_names(unet):
        parent, attr = _parent_and_attr(unet, name)
        base = unet.get_submodule(name)
        assert isinstance(base, nn.Linear)
        adapter = LoRALinear(base, rank, alpha)
        _set_child(parent, attr, adapter)
        adapters[name] = adapter
    return adapters


def remove_lora(unet: nn.Module, adapters: dict[str, LoRALinear]) -> None:
    """Put the original linear layers back."""
    for name, adapter in adapters.items():
        parent, attr = _parent_and_attr(unet, name)
        _set_child(parent, attr, adapter.base)


def lora_state_dict(adapters: dict[str, LoRALinear], dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """The adapters in kohya's key convention."""
    tensors: dict[str, torch.Tensor] = {}
    for name, adapter in adapters.items():
        prefix = lora_key_prefix(name)
        tensors[f"{prefix}.lora_down.weight"] = adapter.down.weight.detach().to("cpu", dtype).contiguous()
        tensors[f"{prefix}.lora_up.weight"] = adapter.up.weight.detach().to("cpu", dtype).contiguous()
        tensors[f"{prefix}.alpha"] = torch.tensor(float(adapter.alpha), dtype=dtype)
    return tensors


def save_lora(adapters: dict[str, LoRALinear], path: Path, metadata: dict[str, str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rank = next(iter(adapters.values())).rank
    info = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank), **(metadata or {})}
    save_file(lora_state_dict(adapters), str(path), metadata=info)


def merge_lora_file(unet: nn.Module, path: Path, scale: float = 1.0) -> int:
    """Add ``scale`` times a kohya LoRA file's updates into ``unet``'s weights in place; returns layers changed.

    Used by the tests and the evaluation; merging with -scale undoes it (up to rounding).
    """
    tensors = load_file(str(path))
    names = {lora_key_prefix(name): name for name, _ in unet.named_modules()}
    changed = 0
    for key, down in tensors.items():
        if not key.endswith(".lora_down.weight"):
            continue
        prefix = key[: -len(".lora_down.weight")]
        module = unet.get_submodule(names[prefix])
        up = tensors[f"{prefix}.lora_up.weight"].float()
        rank = down.shape[0]
        alpha = float(tensors.get(f"{prefix}.alpha", torch.tensor(float(rank))))
        delta = (up @ down.float()) * (alpha / rank) * scale
        with torch.no_grad():
            module.weight += delta.to(module.weight.dtype)
        changed += 1
    return changed
