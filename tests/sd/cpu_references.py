"""ComfyUI's reference outputs for a set of cases, one file per kind of CPU they were made on.

Float32 kernels round differently on different CPUs (AVX2 against AVX-512 exp/log, fused multiply-adds, oneDNN's
choice of convolution kernel), so ComfyUI itself gives other last bits on another machine, and a few chaotic
cases (LCM at few steps, near-singular solves) amplify them. `name.npz` was made on the machine of the earlier
sessions, `name.<cpu>.npz` on others (the tool that made them, run there with `--out`); sdgraph's result must
match ComfyUI's on one of those kinds of CPU, the way it matches it bit for bit on the machine it runs on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class References:
    def __init__(self, path: Path) -> None:
        self.variants = [np.load(path)] + [np.load(p) for p in sorted(path.parent.glob(f"{path.stem}.*.npz"))]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.variants[0][key]

    def all(self, key: str) -> list[np.ndarray]:
        return [variant[key] for variant in self.variants if key in variant.files]

    def closest(self, key: str, ours: np.ndarray) -> np.ndarray:
        """The variant nearest to `ours` (max absolute difference)."""
        return min(self.all(key), key=lambda ref: float(np.abs(ref.astype(np.float64) - ours).max())
                   if ref.shape == ours.shape else float("inf"))
