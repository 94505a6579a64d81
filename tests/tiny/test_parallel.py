"""Data-parallel training: two processes average their gradients and keep identical weights."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sdgraph.tiny.parallel import Team, run_team


def _gradient_of_rank(team: Team) -> list[float]:
    layer = nn.Linear(1, 1, bias=False)
    layer.weight.grad = torch.full_like(layer.weight, float(team.rank + 1))  # rank 0: 1, rank 1: 2
    team.average_gradients(layer.parameters())
    return [float(layer.weight.grad)]


def _train_a_little(team: Team) -> dict[str, torch.Tensor]:
    """Each worker fits its own half-batch; the averaged steps must leave both with the same weights."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(team.seed(5))
    for _ in range(20):
        x = torch.randn(team.share(16), 4, generator=generator)
        loss = (model(x).squeeze(1) - x.sum(1)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        team.average_gradients(model.parameters())
        optimizer.step()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    others = [torch.zeros_like(v) for v in state.values()]
    if team.size > 1:
        import torch.distributed as dist

        for mine, other in zip(state.values(), others):
            copy = mine.clone()
            dist.broadcast(copy, src=1)  # rank 1's weights, to compare on rank 0
            other.copy_(copy)
    return {"mine": state, "rank1": dict(zip(state, others))}


def test_team_of_one_changes_nothing() -> None:
    assert run_team(1, _gradient_of_rank) == [1.0]
    assert Team().share(64) == 64 and Team().leader


def test_batches_must_split_evenly() -> None:
    with pytest.raises(ValueError, match="does not split evenly"):
        Team(0, 2).share(63)


def test_two_workers_average_gradients() -> None:
    assert run_team(2, _gradient_of_rank) == [1.5]


def test_two_workers_keep_identical_weights() -> None:
    result = run_team(2, _train_a_little)
    for name, weights in result["mine"].items():
        assert torch.equal(weights, result["rank1"][name]), name
