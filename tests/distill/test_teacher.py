"""The teacher: ensemble averaging, eval mode without gradients, cached logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchshrink.core.errors import ConfigError, ShapeError
from torchshrink.distill.teacher import Teacher, agreement, as_teacher


def mlp(seed: int, hidden: int = 16, dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10)
    )


def test_ensemble_logits_equal_manual_mean() -> None:
    members = [mlp(i) for i in range(3)]
    x = torch.randn(7, 1, 8, 8)
    with torch.no_grad():
        manual = torch.stack([m(x) for m in members]).mean(dim=0)
    got = Teacher(members).logits(x)
    assert got.shape == (7, 10)
    assert torch.allclose(got, manual, atol=1e-6)


def test_ensemble_features_equal_manual_mean() -> None:
    members = [mlp(i) for i in range(2)]
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        manual = (members[0][:3](x) + members[1][:3](x)) / 2  # output of layer "2" (ReLU)
    out = Teacher(members)(x, layers=["2"])
    assert out.features["2"].shape == (5, 16)
    assert torch.allclose(out.features["2"], manual, atol=1e-6)


def test_teacher_is_eval_and_gives_no_grad() -> None:
    member = mlp(0, dropout=0.5)
    member.train()
    t = Teacher(member)
    assert member.training is False
    member.train()  # a caller switching it back does not matter: every call re-enters eval
    x = torch.randn(4, 1, 8, 8)
    a, b = t.logits(x), t.logits(x)
    assert member.training is False
    assert torch.equal(a, b)  # dropout is off, so two calls agree exactly
    assert a.requires_grad is False
    assert all(p.grad is None for p in member.parameters())


def test_cached_logits_equal_live_and_augmented_batches_run_live() -> None:
    member = mlp(0)
    x = torch.randn(40, 1, 8, 8)
    ds = TensorDataset(x, torch.zeros(40, dtype=torch.long))
    t = Teacher(member, cache=True)
    t.precompute(ds, batch_size=16)
    assert t.cached_samples == 40
    batch = x[torch.tensor([3, 17, 39, 0])]  # a shuffled batch of known samples
    with torch.no_grad():
        live = member(batch)
    assert torch.allclose(t.logits(batch), live, atol=1e-6)
    assert (t.cache_hits, t.cache_misses) == (1, 0)
    shifted = batch + 0.01  # an augmented batch is not in the table
    with torch.no_grad():
        live_shifted = member(shifted)
    assert torch.allclose(t.logits(shifted), live_shifted, atol=1e-6)
    assert (t.cache_hits, t.cache_misses) == (1, 1)
    t.clear_cache()
    assert t.cached_samples == 0


def test_teacher_errors() -> None:
    with pytest.raises(ConfigError, match="at least one teacher"):
        Teacher([])
    with pytest.raises(ConfigError, match=r"expected an nn\.Module"):
        Teacher([mlp(0), "zoo:lenet5"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="cache=True"):
        Teacher(mlp(0)).precompute(TensorDataset(torch.zeros(2, 1, 8, 8)))
    with pytest.raises(ConfigError, match="no layer named 'nope'"):
        Teacher(mlp(0))(torch.zeros(2, 1, 8, 8), layers=["nope"])
    with pytest.raises(ShapeError, match="ensemble members must agree"):
        Teacher([mlp(0, hidden=16), mlp(1, hidden=32)])(torch.zeros(2, 1, 8, 8), layers=["1"])


def test_agreement_and_as_teacher() -> None:
    a, b = mlp(0), mlp(1)
    ds = TensorDataset(torch.randn(50, 1, 8, 8), torch.zeros(50, dtype=torch.long))
    assert agreement(a, a, ds) == 1.0
    value = agreement(a, b, ds)
    assert 0.0 <= value < 1.0
    t = Teacher(a)
    assert as_teacher(t) is t
    assert len(as_teacher([a, b])) == 2
