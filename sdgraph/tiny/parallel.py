"""Data-parallel training on several CPU processes (or one process anywhere).

A 2-core machine trains these small models 1.3-1.9x faster (by phase) as two one-thread processes that each take
half of every batch and average their gradients than as one process (torch's intra-op threading gains only
1.1-1.3x on tensors this small). Every worker runs the same code on the same data with the same initial weights;
only the random draws that pick and noise its half-batch differ by rank. After the averaged gradients the
optimizer steps agree bit for bit, so the workers' weights stay identical and rank 0 saves them.

Results depend on the seed and on the number of workers, never on the machine's core count or on timing.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn


@dataclass(frozen=True)
class Team:
    """This process's place among the training workers."""

    rank: int = 0
    size: int = 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def share(self, batch: int) -> int:
        """This worker's part of a global batch (the global batch must divide evenly)."""
        if batch % self.size:
            raise ValueError(f"batch {batch} does not split evenly over {self.size} workers")
        return batch // self.size

    def seed(self, base: int) -> int:
        """A seed for this worker's random draws (data and noise), distinct per rank."""
        return base + 1_000_003 * self.rank

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Replace every gradient by its mean over the workers (one all-reduce for all of them)."""
        if self.size == 1:
            return
        import torch.distributed as dist

        params = [p for p in parameters if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for param, grad in zip(params, grads):
            count = grad.numel()
            param.grad = flat[offset : offset + count].view_as(grad)
            offset += count


def run_team(size: int, work: Callable[..., Any], *args: Any) -> Any:
    """Run ``work(team, *args)`` on ``size`` processes and return rank 0's result (in-process when size is 1)."""
    if size <= 1:
        return work(Team(), *args)
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="sdgraph-train-") as tmp:
        folder = Path(tmp)
        mp.spawn(_worker, args=(size, str(folder), work, args), nprocs=size, join=True)
        return torch.load(folder / "result.pt", weights_only=False)


def _worker(rank: int, size: int, folder: str, work: Callable[..., Any], args: tuple) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=size)
    try:
        result = work(Team(rank, size), *args)
        if rank == 0:
            torch.save(result, Path(folder) / "result.pt")
    finally:
        dist.destroy_process_group()
