"""`comfy.model_management` for plugins: devices, dtypes, memory, and the interrupt, from sdgraph's model manager.

The interrupt is sdgraph's: `interrupt_current_processing` sets the flag of the run in progress (the one the
executor checks between nodes and at each progress step), and `InterruptProcessingException` is an
`sdgraph.context.Interrupted`, so raising it ends the run as interrupted, not as failed.

sdgraph moves weights to the compute device itself when a model runs, so `load_models_gpu` only makes room
(asks the manager to offload when the memory asked for is not free); model objects are not ComfyUI's
ModelPatcher and are not placed by this call.
"""
from __future__ import annotations

import enum
import gc
from typing import Any, Sequence

import torch

from sdgraph.comfy_layer import binding
from sdgraph.context import Interrupted
from sdgraph.models import pick_device
from sdgraph.models.memory import available_ram_bytes

from comfy.cli_args import args  # noqa: F401 - ComfyUI's module exposes it here too


class VRAMState(enum.Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


class CPUState(enum.Enum):
    GPU = 0
    CPU = 1
    MPS = 2


class InterruptProcessingException(Interrupted):
    """Raised when the run was asked to stop; sdgraph's executor reports the run as interrupted."""


OOM_EXCEPTION = torch.cuda.OutOfMemoryError
XFORMERS_IS_AVAILABLE = False
DISABLE_SMART_MEMORY = False


def _manager() -> Any:
    return binding.services().models


# ---- devices and dtypes ------------------------------------------------------------------------------------

def get_torch_device() -> torch.device:
    manager = _manager()
    return manager.compute_device if manager is not None else pick_device()


def intermediate_device() -> torch.device:
    """Where node outputs between models live: the CPU, as in ComfyUI without --gpu-only."""
    return torch.device("cpu")


def intermediate_dtype() -> torch.dtype:
    """The dtype node outputs between models are made in (newer ComfyUI API; packs such as KJNodes call it):
    float32, the dtype of sdgraph's IMAGE, MASK and LATENT values."""
    return torch.float32


def _offload() -> torch.device:
    manager = _manager()
    return manager.offload_device if manager is not None else torch.device("cpu")


def unet_offload_device() -> torch.device:
    return _offload()


def text_encoder_offload_device() -> torch.device:
    return _offload()


def vae_offload_device() -> torch.device:
    return _offload()


def unet_inital_load_device(parameters: int = 0, dtype: Any = None) -> torch.device:
    return _offload()


def text_encoder_device() -> torch.device:
    return get_torch_device()


def vae_device() -> torch.device:
    return get_torch_device()


def _dtype(role: str) -> torch.dtype:
    manager = _manager()
    if manager is not None:
        return manager.dtype_for_role(role)
    return torch.float32 if get_torch_device().type == "cpu" else torch.float16


def unet_dtype(device: Any = None, model_params: int = 0, supported_dtypes: Sequence[Any] = (), weight_dtype: Any = None
               ) -> torch.dtype:
    return _dtype("unet")


def text_encoder_dtype(device: Any = None) -> torch.dtype:
    return _dtype("clip")


def vae_dtype(device: Any = None, allowed_dtypes: Sequence[Any] = ()) -> torch.dtype:
    return _dtype("vae")


def unet_manual_cast(weight_dtype: Any, inference_device: Any, supported_dtypes: Sequence[Any] = ()) -> Any:
    return None


def get_autocast_device(dev: Any) -> str:
    return dev.type if hasattr(dev, "type") else "cuda"


def is_device_type(device: Any, kind: str) -> bool:
    return getattr(device, "type", None) == kind


def is_device_cpu(device: Any) -> bool:
    return is_device_type(device, "cpu")


def is_device_mps(device: Any) -> bool:
    return is_device_type(device, "mps")


def is_device_cuda(device: Any) -> bool:
    return is_device_type(device, "cuda")


def cpu_mode() -> bool:
    return get_torch_device().type == "cpu"


def mps_mode() -> bool:
    return get_torch_device().type == "mps"


def is_nvidia() -> bool:
    return torch.cuda.is_available() and torch.version.cuda is not None


def is_amd() -> bool:
    return torch.cuda.is_available() and getattr(torch.version, "hip", None) is not None


def is_intel_xpu() -> bool:
    return False


def directml_enabled() -> bool:
    return False


def xformers_enabled() -> bool:
    return False


def xformers_enabled_vae() -> bool:
    return False


def pytorch_attention_enabled() -> bool:
    return True


def should_use_fp16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    return _dtype("unet") == torch.float16


def should_use_bf16(device: Any = None, model_params: int = 0, prioritize_performance: bool = True,
                    manual_cast: bool = False) -> bool:
    return _dtype("unet") == torch.bfloat16


def dtype_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def device_supports_non_blocking(device: Any) -> bool:
    return is_device_cuda(device)


def cast_to_device(tensor: torch.Tensor, device: Any, dtype: Any, copy: bool = False) -> torch.Tensor:
    return tensor.to(device=device, dtype=dtype, copy=copy)


def module_size(module: torch.nn.Module) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


# ---- memory ------------------------------------------------------------------------------------------------

def get_total_memory(dev: Any = None, torch_total_too: bool = False) -> Any:
    dev = dev or get_torch_device()
    if is_device_cuda(dev):
        _, total = torch.cuda.mem_get_info(dev)
        reserved = torch.cuda.memory_reserved(dev)
    else:
        total = reserved = _ram_total()
    return (total, reserved) if torch_total_too else total


def _ram_total() -> int:
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return available_ram_bytes()


def get_free_memory(dev: Any = None, torch_free_too: bool = False) -> Any:
    """Free bytes on the device (CUDA: free plus what torch holds reserved but unused), as ComfyUI counts."""
    dev = dev or get_torch_device()
    if is_device_cuda(dev):
        free_cuda, _ = torch.cuda.mem_get_info(dev)
        torch_free = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
        total_free = free_cuda + torch_free
    else:
        total_free = torch_free = available_ram_bytes()
    return (total_free, torch_free) if torch_free_too else total_free


def free_memory(memory_required: int, device: Any, keep_loaded: Sequence[Any] = ()) -> list[Any]:
    """Make memory_required bytes free on device: sdgraph's manager moves its models off when they are not."""
    manager = _manager()
    if manager is not None and get_free_memory(device) < memory_required:
        manager.unload_all()
    soft_empty_cache()
    return []


def load_models_gpu(models: Sequence[Any], memory_required: int = 0, force_patch_weights: bool = False,
                    minimum_memory_required: Any = None, force_full_load: bool = False) -> None:
    if memory_required:
        free_memory(memory_required, get_torch_device())


def load_model_gpu(model: Any) -> None:
    load_models_gpu([model])


def loaded_models(only_currently_used: bool = False) -> list[Any]:
    return []


current_loaded_models: list[Any] = []


def unload_all_models() -> None:
    manager = _manager()
    if manager is not None:
        manager.unload_all()


def cleanup_models(keep_clone_weights_loaded: bool = False) -> None:
    gc.collect()


def cleanup_models_gc() -> None:
    gc.collect()


def soft_empty_cache(force: bool = False) -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def maximum_vram_for_weights(device: Any = None) -> int:
    manager = _manager()
    return manager.budget_bytes if manager is not None else get_total_memory(device)


vram_state = VRAMState.NORMAL_VRAM
cpu_state = CPUState.GPU if torch.cuda.is_available() else CPUState.CPU


# ---- interrupt ---------------------------------------------------------------------------------------------

def interrupt_current_processing(value: bool = True) -> None:
    flag = binding.interrupt_flag()
    if value:
        flag.set()
    else:
        flag.clear()


def processing_interrupted() -> bool:
    return binding.interrupt_flag().is_set()


def throw_exception_if_processing_interrupted() -> None:
    """Raise InterruptProcessingException when the run was asked to stop (the executor clears the request
    when the run ends, so later checks in the same run keep seeing it)."""
    if binding.interrupt_flag().is_set():
        raise InterruptProcessingException()
