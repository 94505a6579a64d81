"""ComfyUI's `nodes` module for plugins: MAX_RESOLUTION, the core node classes, and common_ksampler.

The classes are sdgraph's built-in nodes in ComfyUI's convention (sdgraph/comfy_layer/core_classes.py): a pack
may call `nodes.VAEDecode().decode(vae, samples)`, subclass `nodes.KSampler`, or look a class up in
`NODE_CLASS_MAPPINGS` (which also gains the classes of custom packs as they load, as ComfyUI's does).
"""
from __future__ import annotations

from typing import Any

from sdgraph.comfy_layer import core_classes
from sdgraph.nodes.sd.common import MAX_RESOLUTION  # noqa: F401 - re-exported under ComfyUI's name
from sdgraph.nodes.sd.sampling import plan_sigmas, sample_latent, step_reporter

_registry = core_classes.builtin_registry()
NODE_CLASS_MAPPINGS: dict[str, type] = core_classes.core_classes(_registry)
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {name: node.spec.display_name for name, node in _registry.nodes.items()}
EXTENSION_WEB_DIRS: dict[str, str] = {}
LOADED_MODULE_DIRS: dict[str, str] = {}

# ComfyUI's nodes.py defines these classes at module level; the ones sdgraph has are attributes here too
for _name in core_classes.IN_NODES_MODULE:
    if _name in NODE_CLASS_MAPPINGS:
        globals()[_name] = NODE_CLASS_MAPPINGS[_name]


def before_node_execution() -> None:
    import comfy.model_management  # noqa: PLC0415

    comfy.model_management.throw_exception_if_processing_interrupted()


def interrupt_processing(value: bool = True) -> None:
    import comfy.model_management  # noqa: PLC0415

    comfy.model_management.interrupt_current_processing(value)


def common_ksampler(model: Any, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                    positive: list, negative: list, latent: dict[str, Any], denoise: float = 1.0,
                    disable_noise: bool = False, start_step: int | None = None, last_step: int | None = None,
                    force_full_denoise: bool = False) -> tuple[dict[str, Any]]:
    """Sample a LATENT as ComfyUI's KSampler and KSamplerAdvanced do (their shared core), reporting progress
    to the node call in progress."""
    ctx = core_classes._context()
    plan = plan_sigmas(model, scheduler, steps, denoise, start_step, last_step,
                       force_full_denoise=force_full_denoise, sampler_name=sampler_name)
    return (sample_latent(model, positive, negative, latent, seed=seed, cfg=cfg, sampler_name=sampler_name,
                          plan=plan, add_noise=not disable_noise, manager=ctx.models,
                          on_step=step_reporter(ctx, model)),)
