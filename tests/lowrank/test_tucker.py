"""Tucker-2 of Conv2d into 1x1 -> kxk -> 1x1: exactness, monotone error, rank selection."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.errors import ConfigError, UnsupportedLayerError
from torchshrink.lowrank.factorize import reconstructed_weight
from torchshrink.lowrank.tucker import (
    tucker2_decompose,
    tucker2_factorize,
    tucker2_params,
    tucker2_ranks_for_energy,
    tucker2_ranks_for_ratio,
    tucker2_reconstruct,
)


def rel_error(conv: nn.Conv2d, ranks: tuple[int, int], als: int = 0) -> float:
    w = conv.weight.detach().double()
    w_hat = tucker2_reconstruct(*tucker2_decompose(w, ranks, als_iters=als))
    return float((w - w_hat).norm() / w.norm())


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(8, 12, 3, padding=1),
        nn.Conv2d(6, 10, 3, stride=2, padding=1, bias=False),
        nn.Conv2d(5, 7, (3, 5), padding=(1, 2), dilation=(2, 1)),
        nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
    ],
)
def test_full_ranks_reproduce_the_conv(conv: nn.Conv2d) -> None:
    low = tucker2_factorize(conv, (conv.in_channels, conv.out_channels))
    x = torch.randn(2, conv.in_channels, 11, 11)
    assert low(x).shape == conv(x).shape
    assert torch.allclose(low(x), conv(x), atol=1e-5)


def test_lower_ranks_reduce_params_and_error_decreases_with_rank() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 32, 3, padding=1)
    before = sum(p.numel() for p in conv.parameters())
    errors = []
    for r in (2, 4, 8, 16, 24, 32):
        low = tucker2_factorize(conv, (r, r))
        params = sum(p.numel() for p in low.parameters())
        assert params == tucker2_params(conv, (r, r))
        if r <= 16:
            assert params < before
        errors.append(rel_error(conv, (r, r)))
    assert all(a > b for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-6
    # Growing one mode at a time is monotone too (nested HOSVD subspaces).
    by_out = [rel_error(conv, (8, r)) for r in (1, 4, 8, 16, 32)]
    assert all(a >= b for a, b in itertools.pairwise(by_out))


def test_als_refinement_never_hurts() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(16, 24, 3)
    hosvd = rel_error(conv, (5, 6))
    als = rel_error(conv, (5, 6), als=5)
    assert als <= hosvd + 1e-9


def test_factorized_layers_equal_reconstructed_weight() -> None:
    conv = nn.Conv2d(10, 14, 3, stride=2, padding=1)
    low = tucker2_factorize(conv, (4, 5), als_iters=2)
    w_hat = reconstructed_weight(low)
    assert w_hat.shape == conv.weight.shape
    x = torch.randn(3, 10, 9, 9)
    ref = F.conv2d(x, w_hat, conv.bias, stride=2, padding=1)
    assert torch.allclose(low(x), ref, atol=1e-5)


def test_rank_selection_by_energy_and_ratio() -> None:
    torch.manual_seed(3)
    conv = nn.Conv2d(24, 40, 3)
    assert tucker2_ranks_for_energy(conv, 1.0) == (24, 40)
    _r_in, r_out = tucker2_ranks_for_energy(conv, 0.6)
    w = conv.weight.detach().double()
    s_out = torch.linalg.svdvals(w.reshape(40, -1))
    assert float(s_out[:r_out].pow(2).sum() / s_out.pow(2).sum()) >= 0.6
    assert float(s_out[: r_out - 1].pow(2).sum() / s_out.pow(2).sum()) < 0.6
    before = sum(p.numel() for p in conv.parameters())
    for ratio in (2.0, 4.0):
        ranks = tucker2_ranks_for_ratio(conv, ratio)
        assert before / tucker2_params(conv, ranks) >= ratio
        bigger = (ranks[0] + 1, ranks[1] + 2)
        assert before / tucker2_params(conv, bigger) < ratio


def test_tucker_errors() -> None:
    with pytest.raises(UnsupportedLayerError, match=r"ungrouped nn\.Conv2d"):
        tucker2_factorize(nn.Conv2d(4, 4, 3, groups=4), (2, 2))
    with pytest.raises(ConfigError, match="ranks"):
        tucker2_factorize(nn.Conv2d(4, 4, 3), (5, 2))
    with pytest.raises(ConfigError, match="ratio: must be > 1"):
        tucker2_ranks_for_ratio(nn.Conv2d(4, 4, 3), 0.5)
