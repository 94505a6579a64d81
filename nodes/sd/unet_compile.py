"""The UNet's fast path (`sdgraph.fast_path.FastPath`): regional torch.compile and channels_last.

- Regional compilation (scope "blocks", the default): each ResnetBlock2D and BasicTransformerBlock is compiled
  in place (`nn.Module.compile`), not the UNet's whole forward. Blocks of one class share their compiled code
  (parameters are graph inputs), so warm-up compiles one graph per distinct block shape instead of one huge graph, and the UNet's own forward
  stays eager: ControlNet and T2I-Adapter residuals, the patched walk (`unet_walk`, which calls the resnets and
  walks the transformers itself) and any other caller of the module keep working unchanged.
- Scope "unet" compiles the UNet's whole forward instead: on the tiny model it warms up faster and runs faster
  (README), but it is one graph per input signature (ControlNet residuals or none, each size), and the patched
  walk bypasses it (it runs the UNet's parts eagerly).
- The module stays the same object, so the model manager's placement, the output cache and the per-UNet
  bookkeeping of cross-prompt batching see it as before. Weight patches (LoRA) write the parameters in place:
  the compiled code reads them as inputs and is not recompiled (tests/sd/test_unet_compile.py checks both).
- Shapes: on the CPU the blocks compile with dynamic shapes, chosen by measurement (tiny model, cold cache,
  README): warm-up 124 s against 189 s static, a second image size 13 s against 100 s, per call 1.11x eager
  against 1.03x. On CUDA they, and the whole UNet everywhere, are static (`dynamic=False`), so that kernels are
  specialised and CUDA graphs ("reduce-overhead") can capture them (not measured here: no GPU): a new size or
  batch compiles its kernels once, then they are reused across prompts. The recompile limit is raised so that
  every block shape of SD1.5 / SDXL fits (`RECOMPILE_LIMIT`).
- channels_last: the UNet's 4-D weights are stored channels_last; a convolution whose weight is channels_last
  runs channels_last, so the activations follow without touching the latents.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import torch

from sdgraph.fast_path import FastPath

log = logging.getLogger("sdgraph.compile")

REGIONS = frozenset({"ResnetBlock2D", "BasicTransformerBlock"})
# Distinct (class, shape) combinations one compiled forward may meet: SD1.5 has ~15 resnet shapes per image size,
# SDXL ~20; each size or batch adds as many again.
RECOMPILE_LIMIT = 256


def prepare_unet(unet: torch.nn.Module, fast_path: FastPath | None, streamed: bool = False) -> torch.nn.Module:
    """The UNet with the fast path's options applied (once; cheap to call again on every acquire). A streamed
    UNet (--lowvram, or larger than the device) is not compiled: its layers' weights move in hooks per call."""
    if fast_path is None or not fast_path.active:
        return unet
    if fast_path.channels_last and not _channels_last(unet):
        unet.to(memory_format=torch.channels_last)
    if fast_path.compile and not is_compiled(unet):
        if streamed:
            _warn_once(unet, "the UNet streams its weights (--lowvram or over the device budget): it runs eagerly")
        else:
            compile_regions(unet, fast_path.compile_mode, fast_path.compile_scope)
    return unet


def _warn_once(unet: torch.nn.Module, message: str) -> None:
    if not getattr(unet, "_sdgraph_compile_warned", False):
        unet._sdgraph_compile_warned = True  # type: ignore[assignment]
        log.warning("--compile: %s", message)


def compile_regions(unet: torch.nn.Module, mode: str = "default", scope: str = "blocks") -> int:
    """Compile the UNet's repeated blocks (scope "blocks") or its whole forward ("unet") in place; returns how
    many modules were wrapped."""
    _raise_recompile_limit()
    start = time.perf_counter()
    targets = [unet] if scope == "unet" else [m for m in unet.modules() if type(m).__name__ in REGIONS]
    device = next(unet.parameters()).device
    dynamic = scope == "blocks" and device.type == "cpu"
    count = 0
    for module in targets:
        if getattr(module, "_compiled_call_impl", None) is None:
            module.compile(mode=None if mode == "default" else mode, dynamic=dynamic)
            count += 1
    unet._sdgraph_compiled = mode  # type: ignore[assignment]
    # On a CPU the user is told (a warning reaches `sdgraph run`'s stderr): there compile often costs time.
    log.log(logging.INFO if device.type == "cuda" else logging.WARNING,
            "torch.compile (%s) wraps %d UNet modules on %s in %.2f s; each new image size or batch compiles "
            "them on its first step%s", mode, count, device.type, time.perf_counter() - start,
            "" if device.type == "cuda" else _CPU_NOTE)
    return count


_CPU_NOTE = ("; on a CPU it may not pay (measured: an SD1.5-size UNet 0.55x, the tiny model 1.11x, "
             "1.72x with --compile-scope unet; measure here: python -m bench.sampling_speed --device cpu "
             "--size 64 --steps 4 --models sd15)")


def is_compiled(unet: Any) -> bool:
    return getattr(unet, "_sdgraph_compiled", None) is not None


def _channels_last(unet: torch.nn.Module) -> bool:
    for param in unet.parameters():
        if param.dim() == 4:
            return param.is_contiguous(memory_format=torch.channels_last) and not param.is_contiguous()
    return True


def _raise_recompile_limit() -> None:
    import torch._dynamo.config as dynamo_config  # noqa: PLC0415 - only compiled runs pay for dynamo's import

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo_config, name) and getattr(dynamo_config, name) < RECOMPILE_LIMIT:
            setattr(dynamo_config, name, RECOMPILE_LIMIT)
    if getattr(dynamo_config, "accumulated_recompile_limit", RECOMPILE_LIMIT * 4) < RECOMPILE_LIMIT * 4:
        dynamo_config.accumulated_recompile_limit = RECOMPILE_LIMIT * 4
