"""Build torch modules without initialising their weights, then give them real weights by assignment.

Constructing a diffusers or transformers model fills every weight with random numbers that loading a checkpoint
then overwrites; for SD 1.5 that is most of the load time. Inside `empty_weights()` every parameter a module
registers is moved to the meta device (no memory, and the init code that follows runs on nothing), while buffers
are still made for real by the module's own code, so one a checkpoint does not carry (CLIP's non-persistent
`position_ids`) keeps its true value. `assign_weights` then makes the given tensors the module's parameters
(`load_state_dict(assign=True)`: no copy) and refuses a module left with any tensor on the meta device.

Only the thread inside the block is affected: the patch of `Module.register_parameter` is shared, its switch is
per thread.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch

from sdgraph.nodes.sd.checkpoint_layout import UnsupportedCheckpoint

_ORIGINAL = torch.nn.Module.register_parameter
_switch = threading.local()
_lock = threading.Lock()
_users = 0


def _register_on_meta(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
    _ORIGINAL(module, name, param)
    if param is not None and getattr(_switch, "on", False) and param.device.type != "meta":
        module._parameters[name] = type(param)(param.to("meta"), requires_grad=param.requires_grad)


@contextmanager
def empty_weights() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device and real buffers."""
    global _users
    with _lock:
        _users += 1
        torch.nn.Module.register_parameter = _register_on_meta  # type: ignore[method-assign]
    was_on = getattr(_switch, "on", False)
    _switch.on = True
    try:
        yield
    finally:
        _switch.on = was_on
        with _lock:
            _users -= 1
            if _users == 0:
                torch.nn.Module.register_parameter = _ORIGINAL  # type: ignore[method-assign]


def assign_weights(module: torch.nn.Module, weights: Mapping[str, torch.Tensor], what: str) -> None:
    """Make `weights` the module's parameters and persistent buffers, as they are (their dtype, their memory).

    Raises UnsupportedCheckpoint naming the missing or mis-shaped weights, and ValueError when a tensor is left on
    the meta device (a buffer that neither the checkpoint nor the module's own code filled).
    """
    expected = module.state_dict(keep_vars=True)
    missing = [k for k, v in expected.items() if k not in weights and v.is_meta]
    if missing:
        raise UnsupportedCheckpoint(f"{what}: {len(missing)} weights missing, e.g. {missing[:3]}")
    wrong = [f"{k} {tuple(weights[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in weights and weights[k].shape != v.shape]
    if wrong:
        raise UnsupportedCheckpoint(f"{what}: {len(wrong)} weights of the wrong shape, e.g. {wrong[:3]}")
    given = {k: weights[k] if v.is_meta else weights[k].to(v.dtype) for k, v in expected.items() if k in weights}
    module.load_state_dict(given, strict=False, assign=True)
    require_materialised(module, what)


def require_materialised(module: torch.nn.Module, what: str) -> None:
    left = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
    if left:
        raise ValueError(f"{what}: {len(left)} tensors left without data on the meta device, e.g. {left[:3]}")
