"""ControlNet and T2I-Adapter at sampling time: the UNet inputs of a chain of ControlHints for one model evaluation."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sdgraph.nodes.sd.batching import to_batch
from sdgraph.nodes.sd.model_objects import ControlHint, T2IAdapterModel


def hint_pixels(image: torch.Tensor, size: tuple[int, int], batch: int, device: torch.device,
                dtype: torch.dtype) -> torch.Tensor:
    """A hint image [B,H,W,C] 0..1 as the ControlNet's input [batch, 3, H, W], resized to `size` (pixels)."""
    x = image[..., :3].movedim(-1, 1).float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return to_batch(x, batch).to(device=device, dtype=dtype)


@torch.inference_mode()
def control_residuals(hint: ControlHint | None, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                      percent: float, manager: Any = None,
                      added_cond_kwargs: dict[str, torch.Tensor] | None = None,
                      downscale: int = 8) -> dict[str, Any]:
    """UNet keyword arguments adding every active ControlNet's residuals and every active T2I-Adapter's
    features (each kind summed over the chain); {} when none is active.

    `x` is the UNet input (already scaled for the timestep), `t` its timestep, `cond` the encoder hidden states
    for the same batch, `percent` how far sampling is (0 at the first step, 1 at the last).
    """
    sums: dict[str, Any] = {}
    for h in hint.chain() if hint is not None else []:
        if h.strength == 0 or not h.active_at(percent):
            continue
        if h.image is None:
            raise ValueError("a ControlNet in the conditioning was never given its hint image (ComfyUI's "
                             "control_net.copy().set_cond_hint(...) was not called)")
        size = (x.shape[-2] * downscale, x.shape[-1] * downscale)
        if isinstance(h.controlnet, T2IAdapterModel):
            _add(sums, {"down_intrablock_additional_residuals": adapter_features(h, size, x.shape[0], manager)})
            continue
        net = h.controlnet.module(manager)
        device, dtype = h.controlnet.placement(manager)  # not its parameters': a streamed net's rest elsewhere
        fit_time_ids(net, added_cond_kwargs)
        image = hint_pixels(h.image, size, x.shape[0], device, dtype)
        down, mid = net(x.to(device, dtype), t, encoder_hidden_states=cond.to(device, dtype),
                        controlnet_cond=image, conditioning_scale=float(h.strength),
                        added_cond_kwargs=added_cond_kwargs, return_dict=False)
        _add(sums, {"down_block_additional_residuals": list(down), "mid_block_additional_residual": mid})
    return sums


def _add(sums: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if key not in sums:
            sums[key] = value
        elif isinstance(value, torch.Tensor):
            sums[key] = sums[key] + value
        else:
            sums[key] = [a + b for a, b in zip(sums[key], value)]


def adapter_features(h: ControlHint, size: tuple[int, int], batch: int, manager: Any = None) -> list[torch.Tensor]:
    """A T2I-Adapter's features for a hint, times its strength: the hint resized (nearest, as ComfyUI) to the
    picture's size rounded up to the adapter's unshuffle factor, averaged to grey for a one-channel adapter."""
    adapter, model = h.controlnet.module(manager), h.controlnet
    device, dtype = model.placement(manager)
    step = model.unshuffle
    size = (-(-size[0] // step) * step, -(-size[1] // step) * step)
    x = h.image[..., :3].movedim(-1, 1).float()
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="nearest-exact")
    if model.channels_in == 1:
        x = x.mean(1, keepdim=True)
    return [f * float(h.strength) for f in adapter(to_batch(x, batch).to(device=device, dtype=dtype))]


def fit_time_ids(net: torch.nn.Module, added_cond_kwargs: dict[str, torch.Tensor] | None) -> None:
    """Give an SDXL ControlNet's weightless time-id embedding the base model's width.

    Its add-embedding reads the pooled text embedding followed by one sinusoid per time id; a single file does
    not record the sinusoids' width, the inputs do: (add-embedding inputs - pooled width) / number of time ids.
    """
    proj, embedding = getattr(net, "add_time_proj", None), getattr(net, "add_embedding", None)
    if proj is None or embedding is None or not added_cond_kwargs:
        return
    width, rest = divmod(embedding.linear_1.in_features - added_cond_kwargs["text_embeds"].shape[-1],
                         added_cond_kwargs["time_ids"].shape[-1])
    if rest == 0 and width > 0:
        proj.num_channels = width
