"""Tiny upscale-model weight files in the real key layouts, written key by key (not from sdgraph's modules), for the
upscale tests and for tools/comfy_reference/upscale_and_tiles.py (which runs them through ComfyUI and spandrel).

- `esrgan_state`: ESRGAN / RRDBNet in the original layout (`model.0`, `model.1.sub.N.RDBk.convj.0`, ...) or in
  Real-ESRGAN's names (`conv_first`, `body.N.rdbk.convj`, `conv_body`, `conv_upK`, `conv_hr`, `conv_last`).
- `compact_state`: Real-ESRGAN Compact (SRVGGNetCompact): `body.2k` convolutions, `body.2k+1` PReLU weights.
"""
from __future__ import annotations

import torch

GROWTH = 32  # every published RRDBNet uses 32 growth channels (spandrel assumes it)


def _random_conv(out: int, inp: int, g: torch.Generator, k: int = 3, std: float = 0.05) -> dict[str, torch.Tensor]:
    return {"weight": torch.randn(out, inp, k, k, generator=g) * std, "bias": torch.randn(out, generator=g) * 0.01}


def _put(state: dict[str, torch.Tensor], name: str, conv: dict[str, torch.Tensor]) -> None:
    for kind, value in conv.items():
        state[f"{name}.{kind}"] = value


def esrgan_state(features: int = 8, blocks: int = 1, doublings: int = 2, channels_in: int = 3,
                 channels_out: int = 3, layout: str = "original", seed: int = 0, std: float = 0.05,
                 out_bias: float = 0.0) -> dict[str, torch.Tensor]:
    """Random weights (N(0, std)) of an RRDBNet with 2**doublings upscaling; `out_bias` is added to the last
    convolution's bias (0.5 centres the output in 0..1)."""
    g = torch.Generator().manual_seed(seed)

    def _conv(out: int, inp: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        return _random_conv(out, inp, g, std=std)

    state: dict[str, torch.Tensor] = {}
    new = layout == "new"
    _put(state, "conv_first" if new else "model.0", _conv(features, channels_in, g))
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                inp = features + (c - 1) * GROWTH
                out = features if c == 5 else GROWTH
                name = f"body.{b}.rdb{r}.conv{c}" if new else f"model.1.sub.{b}.RDB{r}.conv{c}.0"
                _put(state, name, _conv(out, inp, g))
    _put(state, "conv_body" if new else f"model.1.sub.{blocks}", _conv(features, features, g))
    for d in range(1, doublings + 1):
        _put(state, f"conv_up{d}" if new else f"model.{3 * d}", _conv(features, features, g))
    last = 3 * doublings
    _put(state, "conv_hr" if new else f"model.{last + 2}", _conv(features, features, g))
    final = _conv(channels_out, features, g)
    final["bias"] = final["bias"] + out_bias
    _put(state, "conv_last" if new else f"model.{last + 4}", final)
    return state


def compact_state(features: int = 8, convs: int = 2, scale: int = 2, channels: int = 3, seed: int = 0,
                  std: float = 0.05) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    _put(state, "body.0", _random_conv(features, channels, g, std=std))
    state["body.1.weight"] = torch.full((features,), 0.25)
    for i in range(convs):
        _put(state, f"body.{2 * i + 2}", _random_conv(features, features, g, std=std))
        state[f"body.{2 * i + 3}.weight"] = torch.rand(features, generator=g) * 0.3
    _put(state, f"body.{2 * convs + 2}", _random_conv(channels * scale * scale, features, g, std=std))
    return state


def identity_taps(out: int, inp: int, channels: int) -> torch.Tensor:
    """A 3x3 conv weight whose centre tap copies the first `channels` input channels to the same outputs."""
    weight = torch.zeros(out, inp, 3, 3)
    for c in range(channels):
        weight[c, c, 1, 1] = 1.0
    return weight


def nearest_esrgan_state(mix: torch.Tensor, doublings: int = 2, features: int = 8) -> dict[str, torch.Tensor]:
    """An original-layout RRDBNet that computes a known function: every dense block and the trunk's last conv
    are zero (so the trunk adds nothing), the other convolutions pass the three colour channels on by their
    centre tap (LeakyReLU keeps the 0..1 values), and the last one mixes them: out[c] = sum_k mix[c, k] *
    nearest_upscaled(x)[k] (mix non-negative keeps the LeakyReLU out of play)."""
    state = {k: torch.zeros_like(v) for k, v in esrgan_state(features, 1, doublings).items()}
    state["model.0.weight"] = identity_taps(features, 3, 3)
    for d in range(1, doublings + 1):
        state[f"model.{3 * d}.weight"] = identity_taps(features, features, 3)
    last = 3 * doublings
    state[f"model.{last + 2}.weight"] = identity_taps(features, features, 3)
    weight = torch.zeros(3, features, 3, 3)
    weight[:, :3, 1, 1] = mix
    state[f"model.{last + 4}.weight"] = weight
    return state


# ---- the cases tools/comfy_reference/upscale_and_tiles.py ran through ComfyUI (tests/sd/data/upscale_and_tiles.npz)

RANDOM = {"std": 0.1, "out_bias": 0.5}  # outputs spread over 0..1, few clamped
UPSCALE_CASES = {
    "esrgan-x4": (lambda: esrgan_state(seed=1, **RANDOM), (1, 23, 17, 3), 10),
    "esrgan-x2-tiled": (lambda: esrgan_state(doublings=1, seed=2, **RANDOM), (1, 520, 6, 3), 11),
    "esrgan-x1": (lambda: esrgan_state(doublings=0, seed=7, **RANDOM), (2, 9, 14, 3), 12),
    "realesrgan-x4": (lambda: esrgan_state(layout="new", seed=3, **RANDOM), (1, 15, 21, 3), 13),
    "realesrgan-x2plus": (lambda: esrgan_state(channels_in=12, layout="new", seed=4, **RANDOM), (1, 13, 10, 3), 14),
    "compact-x2": (lambda: compact_state(seed=5, std=0.1), (2, 19, 11, 3), 15),
    "compact-x4": (lambda: compact_state(features=12, convs=3, scale=4, seed=6, std=0.1), (1, 10, 9, 3), 16),
}
# (toy kernel, latent shape, tile_x, tile_y, overlap) in latent pixels, and (pixel shape, tile, overlap) in pixels
DECODE_CASES = {"decode-k3": (3, (1, 4, 10, 14), 8, 8, 2), "decode-k3-wide": (3, (2, 4, 10, 7), 12, 6, 2)}
ENCODE_CASES = {"encode-k1": (1, (1, 72, 104, 3), 64, 16), "encode-k3": (3, (1, 96, 56, 3), 64, 24)}
