"""HypernetworkLoader: a tiny file in the A1111 / ComfyUI hypernetwork layout changes the attention keys and
values exactly as its layers say; malformed files are refused by name."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from conftest import call
from sdgraph.nodes.sd.hypernetwork import HypernetworkLoader, parse_hypernetwork, run_network
from sdgraph.nodes.sd.unet_walk import patched_unet


def _linear(g: torch.Generator, out: int, inp: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(out, inp, generator=g) * 0.2, torch.randn(out, generator=g) * 0.1


def _net(g: torch.Generator, width: int) -> dict[str, torch.Tensor]:
    """A 1-2-1 network as A1111 saves it: the activations sit between the linear layers' indices."""
    (w1, b1), (w2, b2) = _linear(g, 2 * width, width), _linear(g, width, 2 * width)
    return {"linear.0.weight": w1, "linear.0.bias": b1, "linear.2.weight": w2, "linear.2.bias": b2}


def _relu_net(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    hidden = torch.relu(x @ state["linear.0.weight"].T + state["linear.0.bias"])
    return hidden @ state["linear.2.weight"].T + state["linear.2.bias"]


@pytest.fixture(scope="module")
def hypernetwork(dirs: Any) -> tuple[str, dict]:
    g = torch.Generator().manual_seed(2)
    data = {64: [_net(g, 64), _net(g, 64)], 32: [_net(g, 32), _net(g, 32)], "activation_func": "relu",
            "is_layer_norm": False, "use_dropout": True, "last_layer_dropout": False, "activate_output": False,
            "layer_structure": [1, 2, 1], "name": "tiny", "step": 10}
    folder = dirs.models / "hypernetworks"
    folder.mkdir(exist_ok=True)
    torch.save(data, folder / "tiny-hn.pt")
    return "tiny-hn.pt", data


def test_the_hypernetwork_changes_k_and_v_as_its_layers_say(sd1: tuple, ctx: Any, hypernetwork: tuple) -> None:
    name, data = hypernetwork
    model = sd1[0]
    patched = call(HypernetworkLoader, ctx, model=model, hypernetwork_name=name, strength=0.7)[0]
    assert model.model_options == {"transformer_options": {}}
    seen: list = []
    patched.set_model_attn1_patch(lambda n, c, v, e: seen.append(("attn1", n, c, v)) or (n, c, v))
    patched.set_model_attn2_patch(lambda n, c, v, e: seen.append(("attn2", n, c, v)) or (n, c, v))
    unet = patched.unet()
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 77, 64, generator=g)
    options = {**patched.model_options["transformer_options"], "cond_or_uncond": [0], "sigmas": torch.tensor([2.0])}
    with torch.inference_mode():
        out = patched_unet(unet, x, torch.tensor([500.0]), context, options)
        plain = unet(x, torch.tensor([500.0]), encoder_hidden_states=context, return_dict=False)[0]
    assert not torch.allclose(out, plain)
    assert [w for w, *_ in seen].count("attn2") == 4
    for which, n, k, v in seen:
        source = n if which == "attn1" else context  # self-attention: k and v start as n itself
        net_k, net_v = data[source.shape[-1]]
        torch.testing.assert_close(k, source + 0.7 * _relu_net(net_k, source), rtol=0, atol=1e-5)
        torch.testing.assert_close(v, source + 0.7 * _relu_net(net_v, source), rtol=0, atol=1e-5)


def test_layer_norms_follow_each_linear_layer_and_every_linear_is_activated() -> None:
    g = torch.Generator().manual_seed(5)
    (w1, b1), (w2, b2) = _linear(g, 16, 8), _linear(g, 8, 16)
    n1, c1, n2, c2 = torch.rand(16) + 0.5, torch.randn(16), torch.rand(8) + 0.5, torch.randn(8)
    state = {"linear.0.weight": w1, "linear.0.bias": b1, "linear.1.weight": n1, "linear.1.bias": c1,
             "linear.3.weight": w2, "linear.3.bias": b2, "linear.4.weight": n2, "linear.4.bias": c2}
    networks = parse_hypernetwork({8: [state, state], "activation_func": "tanh", "is_layer_norm": True})
    net = networks[8][0]
    assert [layer[0] for layer in net] == ["linear", "act", "norm", "linear", "act", "norm"]
    x = torch.randn(3, 8, generator=g)
    hidden = F.layer_norm(torch.tanh(x @ w1.T + b1), (16,), n1, c1)
    expected = F.layer_norm(torch.tanh(hidden @ w2.T + b2), (8,), n2, c2)
    torch.testing.assert_close(run_network(net, x), expected)


def test_malformed_hypernetworks_are_refused_by_name(ctx: Any, sd1: tuple, dirs: Any, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    with pytest.raises(ValueError, match="unsupported activation_func 'gelu'"):
        parse_hypernetwork({8: [_net(g, 8), _net(g, 8)], "activation_func": "gelu"})
    with pytest.raises(ValueError, match="no networks"):
        parse_hypernetwork({"activation_func": "relu"})
    folder = dirs.models / "hypernetworks"
    folder.mkdir(exist_ok=True)
    torch.save({"weight": torch.zeros(3)}, folder / "not-a-hypernetwork.pt")
    with pytest.raises(ValueError, match="HypernetworkLoader.hypernetwork_name: .*no networks"):
        call(HypernetworkLoader, ctx, model=sd1[0], hypernetwork_name="not-a-hypernetwork.pt", strength=1.0)
