"""Hypernetworks (the A1111 / ComfyUI `.pt` layout) and the HypernetworkLoader node.

A hypernetwork file is a pickled dict (read with `weights_only`):

- integer keys, one per attention width it applies to (the k / v input width: 768 for SD 1.x text, 320 / 640 /
  1280 for self-attention), each holding two state dicts: the network for k and the one for v; in each, the
  `<name>.weight` / `<name>.bias` pairs in file order are the layers: linear layers, each followed by a layer
  norm when "is_layer_norm";
- options "activation_func" (linear, relu, leakyrelu, elu, swish, tanh, sigmoid, softsign, mish; default
  linear), "is_layer_norm", "activate_output" (also activate the last linear layer), "use_dropout" and
  "last_layer_dropout" (training-time dropout, not applied when sampling).

The patch (on attn1 and attn2, as ComfyUI's loader sets it) changes what the k and v projections see:
k' = k + strength * net_k(k), v' = v + strength * net_v(v), for attentions whose k input width has a network.
As in ComfyUI, with layer norms every linear layer is activated (the last one too).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from sdgraph.node import Combo, Float, Input, Node, Output, models_in
from sdgraph.nodes.sd.common import manager_of, model_path
from sdgraph.nodes.sd.model_objects import DiffusionModel
from sdgraph.types import MODEL

Tensor = torch.Tensor
Layer = tuple[Any, ...]  # ("linear", weight, bias) | ("norm", weight, bias) | ("act", name)
Network = tuple[Layer, ...]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu, "leakyrelu": F.leaky_relu, "elu": F.elu, "swish": F.hardswish, "tanh": torch.tanh,
    "sigmoid": torch.sigmoid, "softsign": F.softsign, "mish": F.mish,
}


def read_hypernetwork(path: Path) -> dict[int, tuple[Network, Network]]:
    """The k and v networks per attention width of a hypernetwork file; a clear error for other files."""
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable pickle is the same user error
        raise ValueError(f"{path.name} is not a readable hypernetwork .pt file ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a hypernetwork file (not a dict)")
    return parse_hypernetwork(data, path.name)


def parse_hypernetwork(data: dict[Any, Any], name: str = "hypernetwork") -> dict[int, tuple[Network, Network]]:
    activation = data.get("activation_func", "linear")
    if activation != "linear" and activation not in ACTIVATIONS:
        raise ValueError(f"{name}: unsupported activation_func {activation!r} "
                         f"(known: linear, {', '.join(ACTIVATIONS)})")
    layer_norm, activate_output = bool(data.get("is_layer_norm", False)), bool(data.get("activate_output", False))
    networks: dict[int, tuple[Network, Network]] = {}
    for key, value in data.items():
        try:
            width = int(key)
        except (TypeError, ValueError):
            continue  # an option, not a width
        if not isinstance(value, (list, tuple)) or len(value) < 2:
            raise ValueError(f"{name}: width {width} should hold the k and v networks, found {type(value).__name__}")
        networks[width] = tuple(_network(value[i], activation, layer_norm, activate_output, f"{name}[{width}][{i}]")
                                for i in (0, 1))
    if not networks:
        raise ValueError(f"{name} holds no networks (no attention-width keys): not a hypernetwork file")
    return networks


def _network(state: dict[str, Tensor], activation: str, layer_norm: bool, activate_output: bool,
             where: str) -> Network:
    names = [key[: -len(".weight")] for key in state if key.endswith(".weight")]
    layers: list[Layer] = []
    i = 0
    while i < len(names):
        last = i == len(names) - 1  # counted over every weight, norms included, as ComfyUI counts
        layers.append(("linear", *_weights(state, names[i], where)))
        if activation != "linear" and (not last or activate_output):
            layers.append(("act", activation))
        if layer_norm:
            i += 1
            if i >= len(names):
                raise ValueError(f"{where}: a layer norm should follow linear layer {names[i - 1]!r}")
            layers.append(("norm", *_weights(state, names[i], where)))
        i += 1
    return tuple(layers)


def _weights(state: dict[str, Tensor], name: str, where: str) -> tuple[Tensor, Tensor]:
    weight, bias = state.get(name + ".weight"), state.get(name + ".bias")
    if not isinstance(weight, Tensor) or not isinstance(bias, Tensor):
        raise ValueError(f"{where}: layer {name!r} needs a weight and a bias tensor")
    return weight.float(), bias.float()


def run_network(network: Network, x: Tensor) -> Tensor:
    for layer in network:
        if layer[0] == "linear":
            x = F.linear(x, layer[1], layer[2])
        elif layer[0] == "norm":
            x = F.layer_norm(x, (layer[1].shape[0],), layer[1], layer[2])
        else:
            x = ACTIVATIONS[layer[1]](x)
    return x


class HypernetworkPatch:
    """The attn1 / attn2 patch: k and v plus strength times their networks' outputs."""

    def __init__(self, networks: dict[int, tuple[Network, Network]], strength: float) -> None:
        self.networks = networks
        self.strength = strength
        self._placed: dict[tuple[int, torch.device, torch.dtype], tuple[Network, Network]] = {}

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, extra_options: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        width = k.shape[-1]
        if width not in self.networks:
            return q, k, v
        net_k, net_v = self._on(width, k.device, k.dtype)
        return q, k + run_network(net_k, k) * self.strength, v + run_network(net_v, v) * self.strength

    def _on(self, width: int, device: torch.device, dtype: torch.dtype) -> tuple[Network, Network]:
        key = (width, device, dtype)
        if key not in self._placed:
            self._placed[key] = tuple(tuple((layer[0], *(_to(part, device, dtype) for part in layer[1:]))
                                            for layer in net) for net in self.networks[width])
        return self._placed[key]

    def to(self, device: torch.device) -> "HypernetworkPatch":
        """ComfyUI's patch interface; the networks follow k's device by themselves."""
        return self


def _to(part: Any, device: torch.device, dtype: torch.dtype) -> Any:
    return part.to(device=device, dtype=dtype) if isinstance(part, Tensor) else part


class HypernetworkLoader(Node):
    """Apply a hypernetwork (models/hypernetworks, .pt) to the model's attention keys and values."""

    category = "loaders"
    inputs = [Input("model", MODEL), Combo("hypernetwork_name", models_in("hypernetworks")),
              Float("strength", 1.0, min=-10.0, max=10.0, step=0.01)]
    outputs = [Output(MODEL)]

    def run(self, model: DiffusionModel, hypernetwork_name: str, strength: float) -> tuple:
        path = model_path(self.ctx, "hypernetworks", hypernetwork_name)
        try:
            networks = manager_of(self.ctx).load(path, "hypernetwork", read_hypernetwork)
        except ValueError as exc:
            raise ValueError(f"HypernetworkLoader.hypernetwork_name: {exc}") from exc
        patch = HypernetworkPatch(networks, strength)
        patched = model.clone()
        patched.set_model_attn1_patch(patch)
        patched.set_model_attn2_patch(patch)
        return (patched,)


NODES = [HypernetworkLoader]
