"""Folding dead channels: exact rewrites into smaller models, and the cases left alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchshrink
from torchshrink.core.errors import ConfigError
from torchshrink.prune import fold_dead_channels


def _same(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a.eval()(x) - b.eval()(x)).abs().max())


def test_dead_neurons_of_an_mlp_are_removed_and_folded_exactly() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.BatchNorm1d(24), nn.Tanh(),
        nn.Linear(24, 5),
    )  # fmt: skip
    with torch.no_grad():
        m[0].weight[[1, 5, 9]] = 0.0  # 3 neurons with no input: output relu(bias)
        m[0].bias[[1, 5, 9]] = torch.tensor([0.7, -0.3, 0.2])  # one of them relu's to 0
        m[2].weight[:4] = 0.0  # 4 more, through BatchNorm and tanh
        m[3].running_mean.uniform_(-1, 1), m[3].running_var.uniform_(0.5, 2)
    m.eval()
    x = torch.randn(64, 16)
    small, report = fold_dead_channels(m, x[:8])
    assert report.removed == {"0:out": 3, "2:out": 4}
    assert (small[0].out_features, small[2].in_features, small[2].out_features) == (29, 29, 20)
    assert small[3].num_features == 20 and small[5].in_features == 20
    assert report.params_after < report.params_before == sum(p.numel() for p in m.parameters())
    assert _same(m, small, x) < 1e-5  # on inputs the fold never saw
    assert m[0].out_features == 32  # the model given is not changed


def test_lenet5_dead_filters_fold_into_fc1_and_conv_consumers_are_left_alone() -> None:
    torch.manual_seed(0)
    m = torchshrink.load_model("zoo:lenet5").eval()
    with torch.no_grad():
        m.conv1.weight[3] = 0.0  # its consumer is conv2: zero padding makes a border, left alone
        m.conv2.weight[[0, 7]] = 0.0  # consumed by fc1 through pool + flatten: folded
        m.fc1.weight[10:30] = 0.0
    x = torch.rand(16, 1, 28, 28)
    small, report = fold_dead_channels(m, x[:4])
    assert report.removed == {"conv2:out": 2, "fc1:out": 20}
    assert report.skipped == {"conv1:out": "consumer 'conv2' is a Conv2d, not a Linear"}
    assert small.conv2.out_channels == 48 and small.fc1.in_features == 800 - 2 * 16
    assert small.fc1.out_features == 480 and small.fc2.in_features == 480
    assert small.conv1.out_channels == 20
    assert _same(m, small, x) < 1e-5


def test_a_layer_keeps_one_channel_and_nothing_dead_changes_nothing() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    x = torch.randn(5, 4)
    same, report = fold_dead_channels(m, x)
    assert report.removed == {} and same[0].out_features == 3
    with torch.no_grad():
        m[0].weight.zero_()  # every neuron dead: the output is a constant
    small, report = fold_dead_channels(m, x)
    assert report.removed == {"0:out": 2} and small[0].out_features == 1
    assert _same(m, small, torch.randn(7, 4)) < 1e-6


def test_consumer_without_bias_is_left_alone() -> None:
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, bias=False)).eval()
    with torch.no_grad():
        m[0].weight[0] = 0.0
    small, report = fold_dead_channels(m, torch.randn(3, 4))
    assert report.removed == {} and "no bias" in report.skipped["0:out"]
    assert small[0].out_features == 3


def test_a_model_not_returning_a_tensor_is_refused() -> None:
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.fc(x), x

    with pytest.raises(ConfigError, match="must return a tensor"):
        fold_dead_channels(Pair(), torch.randn(2, 2))


def test_channels_normalized_together_are_left_alone() -> None:
    m = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2)).eval()
    with torch.no_grad():
        m[0].weight[2] = 0.0  # no input, but LayerNorm mixes it with the live channels
    small, report = fold_dead_channels(m, torch.randn(4, 4))
    assert report.removed == {} and "normalizes the channels together" in report.skipped["0:out"]
    assert small[0].out_features == 6


def test_integer_inputs_need_a_batch_of_two() -> None:
    m = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    with pytest.raises(ConfigError, match="batch of 2"):
        fold_dead_channels(m, torch.tensor([[1, 2, 3]]))
    with torch.no_grad():
        m[1].weight[0] = 0.0
    small, report = fold_dead_channels(m, torch.tensor([[1, 2, 3], [4, 5, 6]]))
    assert report.removed == {"1:out": 1} and small[1].out_features == 2
