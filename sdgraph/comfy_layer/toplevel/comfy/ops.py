"""`comfy.ops` for plugins: ComfyUI's layer namespaces, as torch layers that packs build their own modules from.

`disable_weight_init.<Layer>` skips the random initialisation (the weights are loaded afterwards);
`manual_cast.<Layer>` also casts its weight and bias to the input's dtype and device on every call, so a module
stored in one precision runs in another. `cast_bias_weight(layer, input)` is that cast.
"""
from __future__ import annotations

from typing import Any

import torch

scaled_dot_product_attention = torch.nn.functional.scaled_dot_product_attention


def cast_bias_weight(s: torch.nn.Module, input: torch.Tensor | None = None, dtype: Any = None, device: Any = None,
                     bias_dtype: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The layer's weight (and bias) on `device` in `dtype` (by default: the input's), after the layer's
    weight_function / bias_function lists if it has any."""
    if input is not None:
        dtype = input.dtype if dtype is None else dtype
        device = input.device if device is None else device
    bias_dtype = dtype if bias_dtype is None else bias_dtype
    weight = s.weight.to(device=device, dtype=dtype)
    for function in getattr(s, "weight_function", ()):
        weight = function(weight)
    bias = None
    if getattr(s, "bias", None) is not None:
        bias = s.bias.to(device=device, dtype=bias_dtype)
        for function in getattr(s, "bias_function", ()):
            bias = function(bias)
    return weight, bias


class CastWeightBiasOp:
    comfy_cast_weights = False
    weight_function: list[Any] = []
    bias_function: list[Any] = []


def _uninitialised(base: type) -> type:
    def reset_parameters(self: Any) -> None:
        return None

    return type(base.__name__, (base, CastWeightBiasOp), {"reset_parameters": reset_parameters,
                                                          "__module__": __name__})


def _casting(base: type, call: Any) -> type:
    def forward(self: Any, input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        weight, bias = cast_bias_weight(self, input)
        return call(self, input, weight, bias, *args, **kwargs)

    return type(base.__name__, (base,), {"forward": forward, "comfy_cast_weights": True, "__module__": __name__})


F = torch.nn.functional
_LAYERS: dict[str, tuple[type, Any]] = {
    "Linear": (torch.nn.Linear, lambda s, x, w, b: F.linear(x, w, b)),
    "Conv1d": (torch.nn.Conv1d, lambda s, x, w, b: s._conv_forward(x, w, b)),
    "Conv2d": (torch.nn.Conv2d, lambda s, x, w, b: s._conv_forward(x, w, b)),
    "Conv3d": (torch.nn.Conv3d, lambda s, x, w, b: s._conv_forward(x, w, b)),
    "GroupNorm": (torch.nn.GroupNorm, lambda s, x, w, b: F.group_norm(x, s.num_groups, w, b, s.eps)),
    "LayerNorm": (torch.nn.LayerNorm, lambda s, x, w, b: F.layer_norm(x, s.normalized_shape, w, b, s.eps)),
    "ConvTranspose1d": (torch.nn.ConvTranspose1d, lambda s, x, w, b, output_size=None: F.conv_transpose1d(
        x, w, b, s.stride, s.padding, s._output_padding(x, output_size, s.stride, s.padding, s.kernel_size, 1,
                                                        s.dilation), s.groups, s.dilation)),
    "ConvTranspose2d": (torch.nn.ConvTranspose2d, lambda s, x, w, b, output_size=None: F.conv_transpose2d(
        x, w, b, s.stride, s.padding, s._output_padding(x, output_size, s.stride, s.padding, s.kernel_size, 2,
                                                        s.dilation), s.groups, s.dilation)),
    "Embedding": (torch.nn.Embedding, None),
    "RMSNorm": (torch.nn.RMSNorm, lambda s, x, w, b: F.rms_norm(x, s.normalized_shape, w, s.eps)),
}


class disable_weight_init:  # noqa: N801 - ComfyUI's name
    pass


class manual_cast(disable_weight_init):  # noqa: N801
    pass


for _name, (_base, _call) in _LAYERS.items():
    _plain = _uninitialised(_base)
    setattr(disable_weight_init, _name, _plain)
    setattr(manual_cast, _name, _casting(_plain, _call) if _call is not None else _plain)


def pick_operations(weight_dtype: Any, compute_dtype: Any, load_device: Any = None, disable_fast_fp8: bool = False,
                    fp8_optimizations: bool = False, scaled_fp8: Any = None) -> type:
    """The layer namespace for weights stored in weight_dtype and computed in compute_dtype."""
    if scaled_fp8 is not None:
        raise NotImplementedError("comfy.ops.pick_operations(scaled_fp8=...): ComfyUI's scaled fp8 layers are not "
                                  "provided by sdgraph's ComfyUI layer")
    return disable_weight_init if compute_dtype is None or weight_dtype == compute_dtype else manual_cast
