"""One UNet forward for the model calls of several prompts sampled together (cross-prompt batching).

When queued prompts run as a group (`sdgraph.cobatch`), each sampler still runs alone, step by step, with its own
noise and conditioning; only its UNet calls meet the other prompts' in the job's rendezvous, stacked along the
batch into one forward. Each caller must get exactly the bits its own call would give, so:
- Only calls of the same module with the same shapes past the batch merge (x, the context, SDXL's added
  conditioning, unCLIP's class labels); a call with ControlNet residuals or anything else runs by itself.
- A batch-wide forward is not bit-identical to the caller's own on every CPU kernel: matrix products with one or
  two rows (the timestep embedding, each ResNet's time projection) and convolutions of a batch of one take other
  code paths than bigger batches. Inside a merged forward those calls are made per caller, at the caller's own
  row count (`_PerCaller`); every other kernel sees the whole batch.
- That this holds on this machine is not assumed: the first time a module merges a given composition of calls,
  the calls are also made one by one and compared bit for bit. A composition that differs is never merged again
  in this process (its callers get their own calls' results, and a warning says so once).
- A UNet compiled with --compile (`unet_compile`) never merges: its calls run one by one, in turn, as calls with
  ControlNet do. A merged forward has a batch no caller has, so its static-shape blocks would compile again for
  every composition of rows; `_PerCaller` would be traced into the compiled graphs once instead of deciding per
  call; and inductor's kernels give no per-row bit-equality across batch sizes, so the exactness check would
  refuse most compositions after paying for their compilation.
"""
from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Hashable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from sdgraph.cobatch import current_rendezvous
from sdgraph.nodes.sd.unet_compile import is_compiled

log = logging.getLogger("sdgraph.cobatch")
T = TypeVar("T")

MERGEABLE_KWARGS = frozenset({"added_cond_kwargs", "class_labels"})
# The most latent pixels (rows x height x width) one merged forward takes: 16 rows of 64x64 latents (eight SD1.5
# prompts at 512x512 with CFG, two SDXL ones at 1024x1024), so that merging cannot exhaust a GPU's memory that
# each prompt alone fits in; more calls are merged in several forwards.
MAX_MERGED_PIXELS = 16 * 64 * 64

_verdicts: "weakref.WeakKeyDictionary[torch.nn.Module, dict[Hashable, bool]]" = weakref.WeakKeyDictionary()
_verdicts_lock = threading.Lock()


@dataclass
class UnetCall:
    unet: torch.nn.Module
    x: Tensor
    t: Tensor
    context: Tensor
    kwargs: dict[str, Any]

    def solo(self) -> Tensor:
        return self.unet(self.x, self.t, encoder_hidden_states=self.context, return_dict=False, **self.kwargs)[0]


def call_unet(unet: torch.nn.Module, x: Tensor, t: Tensor, context: Tensor, kwargs: dict[str, Any]) -> Tensor:
    """The UNet's output on x: computed here, or, inside a batched job, merged with other prompts' calls."""
    call = UnetCall(unet, x, t, context, kwargs)
    rendezvous = current_rendezvous()
    if rendezvous is None:
        return call.solo()
    return rendezvous.call(merge_key(call), call, merged)


def on_model_thread(work: Callable[[], T]) -> T:
    """`work()`, a model call that cannot merge (ControlNet, a patched UNet): inside a batched job, made by the
    job's thread in turn with the merged calls, so that two model calls never run at once."""
    rendezvous = current_rendezvous()
    if rendezvous is None:
        return work()
    return rendezvous.call(("alone", id(work)), work, _run_alone)


def _run_alone(works: list[Callable[[], Any]]) -> list[Any]:
    with torch.inference_mode():
        return [work() for work in works]


def merge_key(call: UnetCall) -> Hashable:
    """Calls of equal key can be stacked: same module, same shapes and types past the batch."""
    rows = call.x.shape[0]
    added = call.kwargs.get("added_cond_kwargs") or {}
    labels = call.kwargs.get("class_labels")
    tensors = [call.context, *added.values(), *([labels] if labels is not None else [])]
    if (is_compiled(call.unet) or set(call.kwargs) - MERGEABLE_KWARGS or call.t.numel() not in (1, rows)
            or not all(isinstance(v, Tensor) and v.shape[:1] == (rows,) for v in tensors)):
        return ("alone", id(call))
    return (id(call.unet), call.x.dtype, str(call.x.device), tuple(call.x.shape[1:]),
            tuple((name, tuple(v.shape[1:]), v.dtype) for name, v in sorted(added.items())),
            tuple(call.context.shape[1:]), call.context.dtype,
            None if labels is None else (tuple(labels.shape[1:]), labels.dtype))


def merged(calls: list[UnetCall]) -> list[Tensor]:
    """Each call's output, from forwards of as many of them as fit in MAX_MERGED_PIXELS."""
    outputs: list[Tensor] = []
    with torch.inference_mode():  # the job's thread, like the samplers' own
        for chunk in _chunks(calls):
            outputs.extend(_merged(chunk))
    return outputs


def _chunks(calls: list[UnetCall]) -> list[list[UnetCall]]:
    chunks: list[list[UnetCall]] = [[]]
    used = 0
    for call in calls:
        pixels = call.x.shape[0] * call.x.shape[-1] * call.x.shape[-2]
        if chunks[-1] and used + pixels > MAX_MERGED_PIXELS:
            chunks.append([])
            used = 0
        chunks[-1].append(call)
        used += pixels
    return chunks


def _merged(calls: list[UnetCall]) -> list[Tensor]:
    """Each call's output, from one forward of them all when that is known (or now checked) to be exact."""
    if len(calls) == 1:
        return [calls[0].solo()]
    unet = calls[0].unet
    rows = tuple(c.x.shape[0] for c in calls)
    composition = (merge_key(calls[0]), rows)
    with _verdicts_lock:
        verdict = _verdicts.setdefault(unet, {}).get(composition)
    if verdict is False:
        return [c.solo() for c in calls]
    parts = list(_forward(calls, rows).split(list(rows)))
    if verdict is None:
        alone = [c.solo() for c in calls]
        exact = all(torch.equal(a, b) for a, b in zip(parts, alone))
        with _verdicts_lock:
            _verdicts[unet][composition] = exact
        if not exact:
            log.warning("merged UNet calls of %s rows differ from the calls made one by one on this machine; "
                        "prompts batched this way run their model calls one by one", list(rows))
            return alone
    return parts


def _forward(calls: list[UnetCall], rows: tuple[int, ...]) -> Tensor:
    x = torch.cat([c.x for c in calls])
    t = torch.cat([c.t.reshape(-1).expand(r) for c, r in zip(calls, rows)])
    context = torch.cat([c.context for c in calls])
    kwargs: dict[str, Any] = {}
    added = [c.kwargs.get("added_cond_kwargs") for c in calls]
    if added[0] is not None:
        kwargs["added_cond_kwargs"] = {name: torch.cat([a[name] for a in added]) for name in added[0]}
    if calls[0].kwargs.get("class_labels") is not None:
        kwargs["class_labels"] = torch.cat([c.kwargs["class_labels"] for c in calls])
    with _PerCaller(rows):
        return calls[0].unet(x, t, encoder_hidden_states=context, return_dict=False, **kwargs)[0]


class _PerCaller(TorchFunctionMode):
    """Within a merged forward, the calls whose kernels depend on the batch size run at each caller's own size:
    matrix products over the batch's rows (2-D inputs), and convolutions when a caller has a batch of one."""

    def __init__(self, rows: tuple[int, ...]) -> None:
        super().__init__()
        self.rows = list(rows)
        self.total = sum(rows)
        self.singles = any(r == 1 for r in rows)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if args and isinstance(args[0], Tensor) and args[0].shape[:1] == (self.total,):
            if func is F.linear and args[0].dim() == 2:
                return torch.cat([func(part, *args[1:], **kwargs) for part in args[0].split(self.rows)])
            if func is F.conv2d and self.singles:
                return torch.cat([func(part, *args[1:], **kwargs) for part in _conv_parts(args[0], self.rows)])
        return func(*args, **kwargs)


def _conv_parts(x: Tensor, rows: list[int]) -> list[Tensor]:
    """The batch in runs that convolve alike: each caller of one row alone, neighbours of more rows together."""
    parts, start, run = [], 0, 0
    for r in rows:
        if r == 1:
            if run:
                parts.append(x[start - run:start])
                run = 0
            parts.append(x[start:start + 1])
        else:
            run += r
        start += r
    if run:
        parts.append(x[start - run:start])
    return parts
