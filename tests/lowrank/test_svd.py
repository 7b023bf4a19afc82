"""Truncated SVD of Linear / 1x1 conv layers and rank selection."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.errors import ConfigError, UnsupportedLayerError
from torchshrink.lowrank.factorize import reconstructed_weight
from torchshrink.lowrank.svd import (
    rank_for_energy,
    rank_for_ratio,
    singular_values,
    svd_factorize,
    svd_params,
)


def test_full_rank_reproduces_linear() -> None:
    fc = nn.Linear(40, 24)
    low = svd_factorize(fc, rank=24)
    x = torch.randn(16, 40)
    assert torch.allclose(low(x), fc(x), atol=1e-5)
    assert low[0].bias is None and low[1].bias is not None


def test_full_rank_reproduces_1x1_conv_with_stride_and_padding() -> None:
    conv = nn.Conv2d(12, 20, 1, stride=2, padding=1)
    low = svd_factorize(conv, rank=12)
    x = torch.randn(2, 12, 7, 7)
    assert low(x).shape == conv(x).shape == (2, 20, 5, 5)
    assert torch.allclose(low(x), conv(x), atol=1e-5)


def test_low_rank_layers_equal_reconstructed_weight_and_eckart_young() -> None:
    fc = nn.Linear(50, 30)
    low = svd_factorize(fc, rank=7)
    w_hat = reconstructed_weight(low)
    x = torch.randn(8, 50)
    assert torch.allclose(low(x), F.linear(x, w_hat, fc.bias), atol=1e-5)
    # Eckart-Young: the error is exactly the energy of the dropped singular values.
    s = singular_values(fc)
    expected = float(s[7:].pow(2).sum().sqrt())
    assert (fc.weight - w_hat).norm().item() == pytest.approx(expected, rel=1e-4)
    assert torch.linalg.matrix_rank(w_hat.detach()).item() == 7


def test_energy_rank_is_minimal() -> None:
    torch.manual_seed(1)
    fc = nn.Linear(64, 48)
    s = singular_values(fc)
    total = float(s.pow(2).sum())
    for energy in (0.3, 0.5, 0.8, 0.95, 1.0):
        r = rank_for_energy(s, energy)
        kept = float(s[:r].pow(2).sum()) / total
        assert kept >= energy - 1e-9
        if r > 1:
            assert float(s[: r - 1].pow(2).sum()) / total < energy
    assert rank_for_energy(torch.tensor([3.0, 2.0, 1.0]), 9 / 14) == 1
    assert rank_for_energy(torch.tensor([3.0, 2.0, 1.0]), 9 / 14 + 1e-6) == 2
    with pytest.raises(ConfigError, match=r"energy: must be in \(0, 1\]"):
        rank_for_energy(s, 1.5)


@pytest.mark.parametrize(
    ("out_f", "in_f", "ratio"), [(300, 784, 2.0), (100, 300, 3.0), (10, 100, 1.5)]
)
def test_ratio_target_achieved_with_the_largest_rank(out_f: int, in_f: int, ratio: float) -> None:
    r = rank_for_ratio(out_f, in_f, ratio, bias=True)
    before = out_f * in_f + out_f
    assert before / svd_params(out_f, in_f, r, bias=True) >= ratio
    assert before / svd_params(out_f, in_f, r + 1, bias=True) < ratio
    fc = nn.Linear(in_f, out_f)
    low = svd_factorize(fc, r)
    assert sum(p.numel() for p in low.parameters()) == svd_params(out_f, in_f, r, bias=True)
    with pytest.raises(ConfigError, match="ratio: must be > 1"):
        rank_for_ratio(out_f, in_f, 1.0, bias=True)


def test_svd_errors() -> None:
    with pytest.raises(UnsupportedLayerError, match="SVD factorization handles"):
        svd_factorize(nn.Conv2d(3, 4, 3), 2)
    with pytest.raises(ConfigError, match=r"rank: must be in \[1, 4\]"):
        svd_factorize(nn.Linear(4, 8), 5)
