"""Depthwise-separable replacement initialised by per-channel truncated SVD."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.lowrank.separable import (
    separable_factorize,
    separable_factors,
    separable_params,
    separable_reconstruct,
)


def test_separable_runs_with_fewer_params_and_matches_its_kernel() -> None:
    conv = nn.Conv2d(16, 32, 3, stride=2, padding=1)
    pair = separable_factorize(conv)
    x = torch.randn(2, 16, 9, 9)
    y = pair(x)
    assert y.shape == conv(x).shape == (2, 32, 5, 5)
    before = sum(p.numel() for p in conv.parameters())
    after = sum(p.numel() for p in pair.parameters())
    assert after == separable_params(conv, 1) == 16 * 9 + 16 * 32 + 32
    assert after < before / 5
    w_hat = separable_reconstruct(pair[0].weight, pair[1].weight, 16)
    assert torch.allclose(y, F.conv2d(x, w_hat, conv.bias, stride=2, padding=1), atol=1e-5)


def test_multiplier_at_full_rank_is_exact_and_error_falls_with_multiplier() -> None:
    conv = nn.Conv2d(4, 8, 3, padding=1)
    exact = separable_factorize(conv, multiplier=8)
    x = torch.randn(2, 4, 6, 6)
    assert torch.allclose(exact(x), conv(x), atol=1e-5)
    w = conv.weight.detach().double()
    errors = []
    for m in (1, 2, 4, 8):
        w_hat = separable_reconstruct(*separable_factors(w, m), 4)
        errors.append(float((w - w_hat).norm() / w.norm()))
    assert all(a > b for a, b in itertools.pairwise(errors))
    assert errors[-1] < 1e-10


def test_rank_one_kernel_is_exactly_separable() -> None:
    # W[o, i] = p[o, i] * d[i]: exactly one depthwise filter per input channel.
    p, d = torch.randn(6, 3), torch.randn(3, 3, 3)
    w = p[:, :, None, None] * d[None]
    w_hat = separable_reconstruct(*separable_factors(w, 1), 3)
    assert torch.allclose(w_hat, w, atol=1e-5)


def test_multiplier_out_of_range() -> None:
    with pytest.raises(ConfigError, match=r"multiplier: must be in \[1, 9\]"):
        separable_factorize(nn.Conv2d(4, 16, 3), multiplier=10)
