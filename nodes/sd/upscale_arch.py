"""The upscale-model architectures sdgraph builds from a weight file, told apart by their key names as spandrel
(the library ComfyUI loads upscale models with) tells them apart, with its hyper-parameters read from the shapes:

- ESRGAN (RRDBNet): the original layout (`model.0`, `model.1.sub.N.RDBk.convj.0`, ...), and Real-ESRGAN's /
  BSRGAN's newer names (`conv_first`, `body.N.rdbk.convj`, `conv_body`, `conv_up1`, `conv_hr`, `conv_last`),
  mapped onto the original; scale 1, 2, 4, 8... (one nearest x2 + conv per doubling); a first convolution taking
  4 or 16 times the output channels means the model works on pixel-unshuffled input (Real-ESRGAN x2 / x1).
- Real-ESRGAN Compact (SRVGGNetCompact): `body.0` conv, `body.1` PReLU, ... the last conv's channels are
  out_channels * scale**2 for the pixel shuffle; the output adds the nearest-upscaled input.

Both take and give images [B, C, H, W] in 0..1. Other architectures (SwinIR, HAT, DAT, ...) are refused by name.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

StateDict = dict[str, torch.Tensor]


def _conv(channels_in: int, channels_out: int) -> nn.Conv2d:
    return nn.Conv2d(channels_in, channels_out, 3, padding=1)


class DenseBlock(nn.Module):
    """Five convolutions, each fed everything before it; the output is 0.2 of the last added to the input."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        for k in range(1, 5):
            self.add_module(f"conv{k}", nn.Sequential(_conv(features + (k - 1) * growth, growth), nn.LeakyReLU(0.2)))
        self.conv5 = nn.Sequential(_conv(features + 4 * growth, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen = [x]
        for k in range(1, 5):
            seen.append(getattr(self, f"conv{k}")(torch.cat(seen, 1)))
        return self.conv5(torch.cat(seen, 1)) * 0.2 + x


class RRDB(nn.Module):
    """Three dense blocks, residual in residual."""

    def __init__(self, features: int, growth: int) -> None:
        super().__init__()
        self.RDB1, self.RDB2, self.RDB3 = (DenseBlock(features, growth) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.RDB3(self.RDB2(self.RDB1(x))) * 0.2 + x


class Shortcut(nn.Module):
    def __init__(self, sub: nn.Module) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


class RRDBNet(nn.Module):
    """ESRGAN in the original layout; `unshuffle` > 1 folds the input into channels first."""

    def __init__(self, channels_in: int, channels_out: int, features: int, blocks: int, growth: int,
                 doublings: int, unshuffle: int = 1) -> None:
        super().__init__()
        self.unshuffle = unshuffle
        self.scale = 2 ** doublings // unshuffle
        trunk = nn.Sequential(*(RRDB(features, growth) for _ in range(blocks)), _conv(features, features))
        layers: list[nn.Module] = [_conv(channels_in, features), Shortcut(trunk)]
        for _ in range(doublings):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(features, features), nn.LeakyReLU(0.2)]
        layers += [_conv(features, features), nn.LeakyReLU(0.2), _conv(features, channels_out)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle == 1:
            return self.model(x)
        h, w = x.shape[-2:]
        x = _pad_to_multiple(x, self.unshuffle)
        return self.model(F.pixel_unshuffle(x, self.unshuffle))[..., :h * self.scale, :w * self.scale]


class Compact(nn.Module):
    """Real-ESRGAN Compact: convolutions with PReLU at the input size, a pixel shuffle, plus the input upscaled."""

    def __init__(self, channels_in: int, channels_out: int, features: int, convs: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        body: list[nn.Module] = [_conv(channels_in, features), nn.PReLU(features)]
        for _ in range(convs):
            body += [_conv(features, features), nn.PReLU(features)]
        body.append(_conv(features, channels_out * scale * scale))
        self.body = nn.ModuleList(body)
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    pad_h, pad_w = (-x.shape[-2]) % multiple, (-x.shape[-1]) % multiple
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x


# ---- reading the architecture from the keys ------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """A network with its weights, and what a caller needs to know about it."""

    architecture: str
    module: nn.Module
    scale: int
    input_channels: int
    output_channels: int
    minimum: int = 0  # inputs are padded to at least this many pixels a side first,
    size_multiple: int = 1  # and to a multiple of this


class UnsupportedUpscaleModel(ValueError):
    """A weight file whose keys are no architecture sdgraph builds."""


def _seq_len(state: StateDict, prefix: str) -> int:
    indices = {int(k[len(prefix) + 1:].split(".", 1)[0]) for k in state if k.startswith(prefix + ".")
               and k[len(prefix) + 1:].split(".", 1)[0].isdigit()}
    return max(indices) + 1 if indices else 0


_NEW_ESRGAN = [  # newer key names -> the original layout ({nb}: the number of blocks)
    (r"^conv_first\.(weight|bias)$", r"model.0.\1"),
    (r"^(?:RRDB_trunk|body)\.(\d+)\.(?:RDB|rdb)(\d)\.conv(\d)\.(weight|bias)$", r"model.1.sub.\1.RDB\2.conv\3.0.\4"),
    (r"^(?:trunk_conv|conv_body)\.(weight|bias)$", r"model.1.sub.{nb}.\1"),
]


def _esrgan_original_layout(state: StateDict) -> StateDict:
    """A Real-ESRGAN / BSRGAN state dict renamed to the original ESRGAN layout (the original is returned as is)."""
    if "model.0.weight" in state:
        return state
    blocks = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"(?:RRDB_trunk|body)\.(\d+)\.", k)))
    ups = sorted({int(m.group(2)) for k in state if (m := re.match(r"(upconv|conv_up)(\d)\.", k))})
    last_up = 3 * (ups[-1] if ups else 0)
    out: StateDict = {}
    for key, value in state.items():
        for pattern, target in _NEW_ESRGAN:
            if re.match(pattern, key):
                out[re.sub(pattern, target, key).replace("{nb}", str(blocks))] = value
                break
        else:
            if m := re.match(r"^(?:upconv|conv_up)(\d)\.(weight|bias)$", key):
                out[f"model.{3 * int(m.group(1))}.{m.group(2)}"] = value
            elif m := re.match(r"^(?:HRconv|conv_hr)\.(weight|bias)$", key):
                out[f"model.{last_up + 2}.{m.group(1)}"] = value
            elif m := re.match(r"^conv_last\.(weight|bias)$", key):
                out[f"model.{last_up + 4}.{m.group(1)}"] = value
    return out


def _is_esrgan(state: StateDict) -> bool:
    return (("model.0.weight" in state and "model.1.sub.0.RDB1.conv1.0.weight" in state)
            or all(k in state for k in ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight",
                                        "conv_last.weight"))
            or all(k in state for k in ("conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "trunk_conv.weight",
                                        "conv_last.weight")))


def _build_esrgan(state: StateDict) -> Built:
    if any(".conv1x1." in k for k in state):
        raise UnsupportedUpscaleModel("ESRGAN+ (the RRDB variant with extra 1x1 convolutions) is not supported")
    state = _esrgan_original_layout(state)
    length = _seq_len(state, "model")
    doublings = (length - 5) // 3
    channels_in = state["model.0.weight"].shape[1]
    channels_out = state[f"model.{length - 1}.weight"].shape[0]
    ratio = channels_in // channels_out if channels_in % channels_out == 0 else 0
    unshuffle = int(math.isqrt(ratio)) if ratio in (4, 16) else 1
    module = RRDBNet(channels_in, channels_out, features=state["model.0.weight"].shape[0],
                     blocks=_seq_len(state, "model.1.sub") - 1,
                     growth=state["model.1.sub.0.RDB1.conv1.0.weight"].shape[0], doublings=doublings,
                     unshuffle=unshuffle)
    _load(module, state, "ESRGAN")
    return Built("ESRGAN", module, module.scale, channels_in // unshuffle ** 2, channels_out,
                 minimum=4 if unshuffle > 1 else 2, size_multiple=4 if unshuffle > 1 else 1)


def _build_compact(state: StateDict) -> Built:
    last = _seq_len(state, "body") - 1
    channels_in, features = state["body.0.weight"].shape[1], state["body.0.weight"].shape[0]
    shuffled = state[f"body.{last}.bias"].shape[0]
    for channels_out in (channels_in, 3, 4, 1):
        scale = math.isqrt(shuffled // channels_out)
        if shuffled % channels_out == 0 and scale * scale * channels_out == shuffled:
            break
    else:
        raise UnsupportedUpscaleModel(f"Compact: {shuffled} output channels are no scale**2 * (1, 3 or 4)")
    module = Compact(channels_in, channels_out, features, convs=(last - 2) // 2, scale=scale)
    _load(module, state, "Compact")
    return Built("Compact", module, scale, channels_in, channels_out)


def _load(module: nn.Module, state: StateDict, architecture: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise UnsupportedUpscaleModel(f"{architecture}: the weights do not fit the layout their names suggest "
                                      f"({first})") from None


# Architectures spandrel detects that sdgraph does not build, by a key each one has (for a helpful refusal).
_KNOWN_OTHERS = {"layers.0.residual_group.blocks.0.norm1.weight": "SwinIR / HAT / DRCT (transformer)",
                 "layers.0.blocks.0.attn.relative_position_bias_table": "Swin2SR / SwinIR",
                 "before_RG.0.weight": "DAT", "model.model.1.bn_l.running_mean": "LaMa (inpainting)"}


def build(state: StateDict) -> Built:
    """The network a state dict (already unwrapped, see `canonical`) describes, with its weights loaded."""
    if _is_esrgan(state):
        return _build_esrgan(state)
    if "body.0.weight" in state and "body.1.weight" in state:
        return _build_compact(state)
    known = next((name for key, name in _KNOWN_OTHERS.items() if key in state), None)
    what = f"a {known} model" if known else "no architecture sdgraph knows"
    raise UnsupportedUpscaleModel(f"the weights are {what}; sdgraph builds ESRGAN (RRDBNet, incl. Real-ESRGAN) "
                                  "and Real-ESRGAN Compact upscale models")


_WRAPPERS = ("model_state_dict", "state_dict", "params_ema", "params-ema", "params", "model", "net")


def canonical(state: dict) -> StateDict:
    """The tensors of a loaded file, unwrapped as spandrel does: a known wrapping key or a single entry holding
    the dict, then a prefix every key shares ("module." from DataParallel, "netG.")."""
    for key in _WRAPPERS:
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if len(state) == 1 and isinstance(next(iter(state.values())), dict):
        state = next(iter(state.values()))
    for prefix in ("module.", "netG."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
