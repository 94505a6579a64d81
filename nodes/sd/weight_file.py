"""A checkpoint file's tensors, read one at a time as they are asked for.

`open_weights(path)` maps a `.safetensors` file (safetensors `safe_open`) or a zip-format `.ckpt`/`.pt`
(`torch.load(mmap=True, weights_only=True)`): what it hands out are views of the mapped file, so looking at the
layout (key names, a few shapes) reads almost nothing. `weights.cast(dtype)` is the same file as the model will
hold it: each floating-point tensor it hands out is copied once into memory of its own, converted to `dtype` on
the way, so an fp16 file never sits in memory twice and no parameter depends on the file staying as it was (a
checkpoint overwritten under a running server must not change or crash a loaded model).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch

Getter = Callable[[str], torch.Tensor]


class WeightFile(Mapping[str, torch.Tensor]):
    def __init__(self, name: str, keys: list[str], get: Getter, dtype: torch.dtype | None = None) -> None:
        self.name = name
        self._keys = keys
        self._key_set = frozenset(keys)
        self._get = get
        self.dtype = dtype

    def cast(self, dtype: torch.dtype) -> WeightFile:
        """The same tensors, each copied into its own memory as `dtype` (non-float tensors keep their dtype)."""
        return WeightFile(self.name, self._keys, self._get, dtype)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._key_set:
            raise KeyError(key)
        tensor = self._get(key)
        if self.dtype is None:
            return tensor
        dtype = self.dtype if tensor.is_floating_point() else tensor.dtype
        return tensor.to(dtype=dtype, copy=True, memory_format=torch.contiguous_format)

    def __contains__(self, key: object) -> bool:
        return key in self._key_set

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def open_weights(path: Path) -> WeightFile:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        handle = safe_open(str(path), framework="pt", device="cpu")
        return WeightFile(path.name, list(handle.keys()), handle.get_tensor)
    data = _torch_load(path)
    data = data.get("state_dict", data) if isinstance(data, dict) else data
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: holds a {type(data).__name__}, not a dict of tensors")
    tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    return WeightFile(path.name, list(tensors), tensors.__getitem__)


def _torch_load(path: Path) -> object:
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:  # the legacy (pre-zip) format cannot be mapped
        if "mmap" not in str(error):
            raise
        return torch.load(str(path), map_location="cpu", weights_only=True)
