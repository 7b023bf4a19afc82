"""param_stats: counts, non-zeros and bytes on models with known zeros and dtypes."""

from __future__ import annotations

import torch
from torch import nn

from torchshrink.measure.params import module_param_stats, param_stats


def test_known_zeros_are_counted() -> None:
    m = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))  # 220 + 105 params
    with torch.no_grad():
        m[0].weight[:, :5] = 0  # 100 zeros
        m[2].bias.zero_()  # 5 zeros
    s = param_stats(m)
    assert s.params == 325
    assert s.nonzero_params == 325 - 105
    assert abs(s.sparsity - 105 / 325) < 1e-12


def test_dense_bytes_is_four_per_param_and_weight_bytes_follow_dtype() -> None:
    m = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2)).to(torch.float16)
    s = param_stats(m)
    assert s.params == 72 + 18
    assert s.dense_bytes == 4 * 90
    assert s.weight_bytes == 2 * 90
    assert s.bytes_by_dtype == {"float16": 180}


def test_buffers_are_reported_apart_from_params() -> None:
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    s = param_stats(m)
    assert s.params == 4 * 27 + 4 + 8
    # running_mean, running_var (fp32, 4 each) and num_batches_tracked (int64)
    assert s.buffer_bytes == 4 * 4 + 4 * 4 + 8
    assert s.bytes_by_dtype == {"float32": 4 * s.params + 32, "int64": 8}


def test_tied_parameters_are_counted_once() -> None:
    emb = nn.Embedding(50, 8)
    head = nn.Linear(8, 50, bias=False)
    head.weight = emb.weight
    s = param_stats(nn.ModuleList([emb, head]))
    assert s.params == 400


def test_module_param_stats_is_not_recursive() -> None:
    m = nn.Sequential(nn.Linear(3, 3))
    assert module_param_stats(m) == (0, 0)
    with torch.no_grad():
        m[0].weight.fill_(0)
    assert module_param_stats(m[0]) == (12, 3)
