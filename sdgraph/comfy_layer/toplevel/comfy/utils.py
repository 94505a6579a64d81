"""`comfy.utils` for plugins: ProgressBar wired to sdgraph's progress events, resizing, tiling, weight files.

A ProgressBar reports through the node call it was made in (or the one in progress when it updates): each
update is a `progress` event of that node, after an interrupt check, exactly as sdgraph's own nodes report.
A preview given as ComfyUI's ("JPEG", PIL image, max size) is sent as sdgraph's ("JPEG", bytes).
"""
from __future__ import annotations

import io
import math
import struct
from typing import Any, Callable

import torch
from PIL import Image

from sdgraph.comfy_layer import binding
from sdgraph.nodes.sd.bislerp import bislerp as _bislerp
from sdgraph.nodes.sd.resize import resize
from sdgraph.nodes.sd.tiling import tile_count
from sdgraph.nodes.sd.tiling import tiled_scale as _tiled_scale

import comfy.model_management

PROGRESS_BAR_ENABLED = True
PROGRESS_BAR_HOOK: Callable[..., None] | None = None


def set_progress_bar_enabled(enabled: bool) -> None:
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def set_progress_bar_global_hook(function: Callable[..., None] | None) -> None:
    """A hook of the pack's own, called (value, total, preview, node_id=...) in place of sdgraph's events."""
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


def _preview_bytes(preview: Any) -> Any:
    """ComfyUI's ("JPEG"|"PNG", PIL image, max size) as sdgraph's (format, encoded bytes)."""
    if not (isinstance(preview, tuple) and len(preview) >= 2 and isinstance(preview[1], Image.Image)):
        return preview
    kind, image = preview[0], preview[1].copy()
    if len(preview) > 2 and preview[2]:
        image.thumbnail((preview[2], preview[2]), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=kind, **({"quality": 95} if kind == "JPEG" else {}))
    return kind, buffer.getvalue()


class ProgressBar:
    """Counts steps of the node call in progress; `update(n)` adds n, `update_absolute(v)` sets v (capped)."""

    def __init__(self, total: int, node_id: Any = None) -> None:
        self.total = total
        self.current = 0
        self.node_id = node_id
        self.hook = PROGRESS_BAR_HOOK
        self._ctx = binding.context()

    def update_absolute(self, value: int, total: int | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)
            return
        comfy.model_management.throw_exception_if_processing_interrupted()
        ctx = self._ctx or binding.context()
        if ctx is not None:
            ctx.progress(self.current, self.total, _preview_bytes(preview))

    def update(self, value: int) -> None:
        self.update_absolute(self.current + value)


# ---- resizing ----------------------------------------------------------------------------------------------

def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return _bislerp(samples.float(), width, height).to(samples.dtype)


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return resize(samples, width, height, "lanczos").to(samples.device, samples.dtype)


def common_upscale(samples: torch.Tensor, width: int, height: int, upscale_method: str, crop: str) -> torch.Tensor:
    """[B, C, H, W] (or [B, C, T, H, W], frame by frame) resized to height x width by the named method
    ("nearest-exact", "bilinear", "area", "bicubic", "bislerp", "lanczos"), centre-cropped first when
    crop == "center"; the dtype is kept."""
    shape = tuple(samples.shape)
    x = samples
    if len(shape) > 4:  # frames become batch items, and back afterwards
        x = x.reshape(shape[0], shape[1], -1, shape[-2], shape[-1]).movedim(2, 1).reshape(-1, shape[1], *shape[-2:])
    if upscale_method not in ("nearest-exact", "bilinear", "area", "bicubic", "bislerp", "lanczos"):
        raise ValueError(f"common_upscale: unknown upscale_method {upscale_method!r}")
    out = resize(x, width, height, upscale_method, crop).to(samples.device, samples.dtype)
    if len(shape) == 4:
        return out
    out = out.reshape((shape[0], -1, shape[1], height, width))
    return out.movedim(2, 1).reshape(shape[:-2] + (height, width))


def get_tiled_scale_steps(width: int, height: int, tile_x: int, tile_y: int, overlap: int) -> int:
    return tile_count(height, width, tile_y, tile_x, overlap)


@torch.inference_mode()
def tiled_scale(samples: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor], tile_x: int = 64,
                tile_y: int = 64, overlap: int = 8, upscale_amount: float = 4, out_channels: int = 3,
                output_device: Any = "cpu", pbar: ProgressBar | None = None) -> torch.Tensor:
    """`function` applied tile by tile over [B, C, H, W] and blended (feathered over the overlap)."""
    on_tile = (lambda: pbar.update(1)) if pbar is not None else None
    out = _tiled_scale(samples, function, (tile_y, tile_x), overlap, upscale_amount, out_channels, on_tile)
    return out.to(output_device)


def tiled_scale_multidim(samples: torch.Tensor, function: Callable[[torch.Tensor], torch.Tensor],
                         tile: tuple[int, ...] = (64, 64), overlap: int = 8, upscale_amount: float = 4,
                         out_channels: int = 3, output_device: Any = "cpu", downscale: bool = False,
                         index_formulas: Any = None, pbar: ProgressBar | None = None) -> torch.Tensor:
    """tiled_scale over the last two dimensions, tile = (height, width); tiling more dimensions (video) is not
    provided."""
    if len(tile) != 2 or samples.ndim != 4 or downscale or index_formulas is not None:
        raise NotImplementedError("comfy.utils.tiled_scale_multidim: sdgraph tiles 2-D [B, C, H, W] inputs only "
                                  "(no video tiling, downscale or index_formulas)")
    return tiled_scale(samples, function, tile[1], tile[0], overlap, upscale_amount, out_channels,
                       output_device, pbar)


# ---- batches and masks -------------------------------------------------------------------------------------

def repeat_to_batch_size(tensor: torch.Tensor, batch_size: int, dim: int = 0) -> torch.Tensor:
    """Cut or tile along dim to batch_size items."""
    size = tensor.shape[dim]
    if size > batch_size:
        return tensor.narrow(dim, 0, batch_size)
    if size < batch_size:
        reps = [1] * tensor.ndim
        reps[dim] = -(-batch_size // size)
        return tensor.repeat(reps).narrow(dim, 0, batch_size)
    return tensor


def resize_to_batch_size(tensor: torch.Tensor, batch_size: int) -> torch.Tensor:
    """batch_size items picked evenly from the batch (nearest index when growing, spread when shrinking)."""
    size = tensor.shape[0]
    if size == batch_size:
        return tensor
    if batch_size <= 1:
        return tensor[:batch_size]
    if size < batch_size:
        picks = [min(math.floor((i + 0.5) * size / batch_size), size - 1) for i in range(batch_size)]
    else:
        scale = (size - 1) / (batch_size - 1)
        picks = [min(round(i * scale), size - 1) for i in range(batch_size)]
    return tensor[picks]


def reshape_mask(input_mask: torch.Tensor, output_shape: tuple[int, ...]) -> torch.Tensor:
    """A mask [B, H, W] (or [B, 1, H, W]) resized to output_shape's spatial size (bilinear), its channels
    repeated to output_shape[1] and its batch to output_shape[0]."""
    dims = len(output_shape) - 2
    if dims != 2:
        raise NotImplementedError("reshape_mask: only 4-D (image/latent) shapes are provided by sdgraph yet")
    mask = input_mask.reshape(-1, 1, input_mask.shape[-2], input_mask.shape[-1])
    mask = torch.nn.functional.interpolate(mask, size=tuple(output_shape[2:]), mode="bilinear")
    if mask.shape[1] < output_shape[1]:
        mask = mask.repeat((1, output_shape[1]) + (1,) * dims)[:, :output_shape[1]]
    return repeat_to_batch_size(mask, output_shape[0])


# ---- weight files and state dicts --------------------------------------------------------------------------

def _unwrapped(loaded: Any) -> Any:
    """A .ckpt's weights: its "state_dict" entry, or the single entry of a one-key dict holding a dict."""
    if isinstance(loaded, dict) and "state_dict" in loaded:
        return loaded["state_dict"]
    if isinstance(loaded, dict) and len(loaded) == 1:
        inner = next(iter(loaded.values()))
        if isinstance(inner, dict):
            return inner
    return loaded


def load_torch_file(ckpt: str, safe_load: bool = False, device: Any = None, return_metadata: bool = False) -> Any:
    """A weight file as a dict of tensors (on device, CPU by default); with its safetensors metadata if asked.
    Pickled files load with weights_only (no code runs), whatever safe_load says."""
    device = torch.device("cpu") if device is None else torch.device(device)
    metadata = None
    if str(ckpt).lower().endswith((".safetensors", ".sft")):
        from safetensors import safe_open  # noqa: PLC0415

        with safe_open(str(ckpt), framework="pt", device=str(device)) as f:
            sd = {key: f.get_tensor(key) for key in f.keys()}
            metadata = f.metadata() if return_metadata else None
    else:
        sd = _unwrapped(torch.load(ckpt, map_location=device, weights_only=True))
    return (sd, metadata) if return_metadata else sd


def save_torch_file(sd: dict[str, torch.Tensor], ckpt: str, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file  # noqa: PLC0415

    save_file(sd, ckpt, metadata=metadata)


def safetensors_header(safetensors_path: str, max_size: int = 100 * 1024 * 1024) -> bytes | None:
    """The raw JSON header of a safetensors file (None when it claims to be larger than max_size)."""
    with open(safetensors_path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        return None if size > max_size else f.read(size)


def calculate_parameters(sd: dict[str, torch.Tensor], prefix: str = "") -> int:
    return sum(v.nelement() for k, v in sd.items() if k.startswith(prefix))


def weight_dtype(sd: dict[str, torch.Tensor], prefix: str = "") -> torch.dtype | None:
    """The dtype holding the most parameters under prefix."""
    counts: dict[torch.dtype, int] = {}
    for key, value in sd.items():
        if key.startswith(prefix):
            counts[value.dtype] = counts.get(value.dtype, 0) + value.numel()
    return max(counts, key=counts.get) if counts else None


def state_dict_key_replace(state_dict: dict[str, Any], keys_to_replace: dict[str, str]) -> dict[str, Any]:
    for old, new in keys_to_replace.items():
        if old in state_dict:
            state_dict[new] = state_dict.pop(old)
    return state_dict


def state_dict_prefix_replace(state_dict: dict[str, Any], replace_prefix: dict[str, str], filter_keys: bool = False
                              ) -> dict[str, Any]:
    out = {} if filter_keys else state_dict
    for old, new in replace_prefix.items():
        for key in [k for k in state_dict if k.startswith(old)]:
            out[new + key[len(old):]] = state_dict.pop(key)
    return out


# ---- attributes by dotted path -----------------------------------------------------------------------------

def get_attr(obj: Any, attr: str) -> Any:
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj


def set_attr(obj: Any, attr: str, value: Any) -> Any:
    *path, last = attr.split(".")
    owner = get_attr(obj, ".".join(path)) if path else obj
    previous = getattr(owner, last)
    setattr(owner, last, value)
    return previous


def set_attr_param(obj: Any, attr: str, value: torch.Tensor) -> Any:
    return set_attr(obj, attr, torch.nn.Parameter(value, requires_grad=False))


def copy_to_param(obj: Any, attr: str, value: torch.Tensor) -> None:
    get_attr(obj, attr).data.copy_(value)
