"""Importance criteria: one score per channel of each group, and the right channel wins."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.graph import dependency_groups
from torchshrink.prune.importance import IMPORTANCE, ImportanceContext, get_importance


class _ConvNet(nn.Module):
    """conv(2->4) + BN + ReLU + pooled linear; channel 2 is built to matter most."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv.weight.mul_(0.01)
            self.conv.weight[2].fill_(1.0)  # (2, 3, 3) large filter
            self.bn.weight.copy_(torch.tensor([0.01, 0.02, 3.0, 0.01]))
            self.fc.weight.mul_(0.01)
            self.fc.weight[:, 2] = torch.tensor([2.0, -2.0, 1.0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))  # (B, 4, H, W)
        return self.fc(self.flat(self.pool(h)))  # (B, 3)


def _batches() -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, 6, 6, generator=g).abs()
    y = torch.randint(0, 3, (16,), generator=g)
    return ((x[:8], y[:8]), (x[8:], y[8:]))


@pytest.mark.parametrize("name", ["l1", "l2", "magnitude", "taylor", "obd", "bn-scale"])
def test_each_criterion_scores_every_channel_and_prefers_the_important_one(name: str) -> None:
    model = _ConvNet().eval()
    [g] = dependency_groups(model, torch.zeros(1, 2, 6, 6))
    ctx = ImportanceContext(batches=_batches())
    [scores] = get_importance(name).group_scores(model, [g], ctx)
    assert scores.shape == (4,)
    assert int(scores.argmax()) == 2
    assert bool((scores >= 0).all())


def test_random_is_seeded_and_scores_groups_and_blocks() -> None:
    model = _ConvNet()
    [g] = dependency_groups(model, torch.zeros(1, 2, 6, 6))
    imp = get_importance("random")
    a = imp.group_scores(model, [g], ImportanceContext(seed=1))[0]
    b = imp.group_scores(model, [g], ImportanceContext(seed=1))[0]
    c = imp.group_scores(model, [g], ImportanceContext(seed=2))[0]
    assert a.shape == (4,) and torch.equal(a, b) and not torch.equal(a, c)
    assert imp.block_scores(model, ["conv", "fc"], ImportanceContext()).shape == (2,)


def test_group_score_sums_every_slice_of_the_group() -> None:
    # Channel 0's producer row is small but the reader column is huge: L1 counts both.
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, 0.1], [1.0, 1.0]]))
        model[2].weight.copy_(torch.tensor([[10.0, 0.1]]))
    [g] = dependency_groups(model, torch.zeros(1, 2))
    [s] = get_importance("l1").group_scores(model, [g], ImportanceContext())
    assert s.tolist() == pytest.approx([10.2, 2.1])


def test_block_scores_are_mean_weight_scores() -> None:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].weight.fill_(-3.0)
    s = get_importance("l1").block_scores(model, ["0", "1"], ImportanceContext())
    assert s.tolist() == [1.0, 3.0]


def test_data_driven_criteria_need_batches_and_bn_scale_needs_channels() -> None:
    model = _ConvNet()
    with pytest.raises(ConfigError, match="no batches"):
        get_importance("taylor").element_scores(model, {}, ImportanceContext())
    with pytest.raises(ConfigError, match="'bn-scale' scores channels"):
        get_importance("bn-scale").element_scores(model, {}, ImportanceContext())
    with pytest.raises(ConfigError, match="unknown importance 'nope'; valid names: bn-scale"):
        get_importance("nope")
    assert {"l1", "l2", "random", "taylor", "obd", "bn-scale"} <= set(IMPORTANCE.names())


def test_scoring_with_gradients_does_not_change_the_model() -> None:
    model = _ConvNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    [g] = dependency_groups(model, torch.zeros(1, 2, 6, 6))
    get_importance("obd").group_scores(model, [g], ImportanceContext(batches=_batches()))
    assert model.training and all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
