"""A toy "UNet" and conditioning scenarios shared by `tools/comfy_reference/conditioning_reference.py` (which
runs ComfyUI's own sampler-side conditioning code on them) and `test_conditioning_reference.py` (sdgraph's).

The toy predicts epsilon from its whole input (the scaled latent, then any concat channels), the timestep and
the context: a fixed channel mix, plus the mean of its input over the pixels it is given (so a crop sees other
numbers than the full latent), plus the context's mean token; it is cheap and exactly the same function in
both engines. Every tensor of a scenario comes from a seeded CPU generator.
"""
from __future__ import annotations

from typing import Any

import torch

TOKENS, DIM = 77, 8
MAX_IN = 9


def _fixed(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


MIX = _fixed((4, MAX_IN), 100) * 0.5
GLOBAL = _fixed((MAX_IN, 4), 101) * 0.3


def toy_eps(xc: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """eps [N, 4, h, w] for the UNet input xc [N, C, h, w], timesteps t ([N] or [1]) and context [N, T, D]."""
    xc = xc.float()
    channels = xc.shape[1]
    mix = torch.einsum("oc,nchw->nohw", MIX[:, :channels], xc)
    overall = (xc.mean(dim=(2, 3)) @ GLOBAL[:channels])[:, :, None, None]
    ctx = context.float().mean(dim=1)[:, :4, None, None]
    return torch.tanh(mix + overall + ctx) + t.float().reshape(-1, 1, 1, 1) / 1000.0


def text(seed: int, tokens: int = TOKENS) -> torch.Tensor:
    return _fixed((1, tokens, DIM), seed)


def soft_mask(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def box_mask(shape: tuple[int, int, int], rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    mask = torch.zeros(shape)
    mask[:, rows[0]:rows[1], cols[0]:cols[1]] = 1.0
    return mask


SIGMAS = (14.614643096923828, 3.0, 1.0, 0.30000001192092896)


def scenarios() -> dict[str, dict[str, Any]]:
    """name -> {"positive", "negative" ([cond, extras] lists), "cfg", "kind" (None | "inpaint" | "ip2p"),
    "samples" (the LATENT's, unscaled), "noise_mask" (or None), "sigmas"}."""
    z16 = torch.zeros(1, 4, 16, 16)
    cases: dict[str, dict[str, Any]] = {}

    def case(name: str, positive: list, negative: list, cfg: float, kind: str | None = None,
             samples: torch.Tensor = z16, noise_mask: torch.Tensor | None = None,
             sigmas: tuple[float, ...] = SIGMAS) -> None:
        cases[name] = dict(positive=positive, negative=negative, cfg=cfg, kind=kind, samples=samples,
                           noise_mask=noise_mask, sigmas=sigmas)

    case("areas", [[text(1), {}], [text(2), {"area": (8, 6, 2, 4), "strength": 1.5}],
                   [text(3), {"area": ("percentage", 0.25, 0.5, 0.5, 0.25), "strength": 0.8}]],
         [[text(4), {}]], 4.0)
    case("areas_cfg1", [[text(1), {}], [text(2), {"area": (8, 8, 8, 8)}]],
         [[text(4), {}], [text(5), {"area": (4, 12, 0, 2), "strength": 2.0}]], 1.0)
    case("areas_only", [[text(2), {"area": (16, 8, 0, 0)}], [text(3), {"area": ("percentage", 0.5, 0.5, 0.5, 0.5)}]],
         [[text(4), {}]], 3.0)
    case("masks", [[text(1), {}],
                   [text(2), {"mask": soft_mask((1, 32, 32), 6), "mask_strength": 0.7, "strength": 1.2,
                              "set_area_to_bounds": False}],
                   [text(3), {"mask": box_mask((1, 128, 128), (20, 70), (64, 90)), "mask_strength": 1.0,
                              "set_area_to_bounds": True}]],
         [[text(4), {}]], 3.0)
    case("mask_bounds_empty", [[text(1), {}], [text(2), {"mask": torch.zeros(1, 16, 16), "set_area_to_bounds": True}]],
         [[text(4), {}]], 2.0)
    case("mask_in_area", [[text(1), {}], [text(2), {"area": (8, 8, 4, 4), "mask": soft_mask((1, 16, 16), 7)}]],
         [[text(4), {}]], 2.0)
    window_sigmas = SIGMAS + (1.6155803203582764, 1.5, 0.6, 0.05)  # 1.6156: the float32 sigma at 50 %
    case("windows", [[text(1), {"start_percent": 0.0, "end_percent": 0.5}],
                     [text(2), {"start_percent": 0.5, "end_percent": 1.0}],
                     [text(3), {"area": (8, 8, 0, 0), "start_percent": 0.3, "end_percent": 0.7}]],
         [[text(4), {"end_percent": 0.8}]], 5.0, sigmas=window_sigmas)
    case("window_gap", [[text(1), {"start_percent": 0.0, "end_percent": 0.2}],
                        [text(2), {"start_percent": 0.8, "end_percent": 1.0}]], [[text(4), {}]], 1.0,
         sigmas=window_sigmas)
    latent = _fixed((1, 4, 16, 16), 8)
    inpaint_keys = {"concat_latent_image": _fixed((1, 4, 16, 16), 9), "concat_mask": soft_mask((1, 1, 128, 96), 10)}
    case("inpaint", [[text(1), dict(inpaint_keys)], [text(2), {**inpaint_keys, "area": (8, 8, 8, 4)}]],
         [[text(4), dict(inpaint_keys)]], 4.0, "inpaint", latent, soft_mask((1, 1, 128, 128), 11))
    case("inpaint_noise_mask", [[text(1), {}]], [[text(4), {}]], 4.0, "inpaint", latent,
         soft_mask((1, 1, 64, 64), 12))
    case("inpaint_blank", [[text(1), {}]], [[text(4), {}]], 4.0, "inpaint")
    case("inpaint_batch", [[text(1), {"concat_latent_image": _fixed((1, 4, 16, 16), 13),
                                      "concat_mask": soft_mask((3, 1, 128, 128), 14)}]], [[text(4), {}]], 4.0,
         "inpaint", _fixed((2, 4, 16, 16), 15), soft_mask((1, 1, 16, 16), 16))
    case("ip2p", [[text(1), {"concat_latent_image": _fixed((1, 4, 8, 12), 17)}]], [[text(4), {}]], 4.0, "ip2p")
    return cases


def start(name: str, shape: tuple[int, ...], sigma: float, index: int) -> torch.Tensor:
    """The x a scenario's denoiser is evaluated at for its `index`-th sigma."""
    seed = 1000 + 37 * index + sum(ord(c) for c in name)
    return _fixed(shape, seed) * sigma
