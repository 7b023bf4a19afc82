"""measure_memory: peak working memory of one inference from allocator events."""

from __future__ import annotations

import torch
from torch import nn

from torchshrink.measure.memory import measure_memory


def test_peak_covers_the_output_and_grows_with_batch() -> None:
    m = nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 8))
    small = measure_memory(m, torch.randn(4, 64))
    big = measure_memory(m, torch.randn(64, 64))
    assert small.device == "cpu"
    # the (B, 1024) fp32 hidden activation must be live at some point
    assert small.peak_bytes is not None and small.peak_bytes >= 4 * 1024 * 4
    assert big.peak_bytes is not None and big.peak_bytes >= 64 * 1024 * 4
    assert big.peak_bytes > 8 * small.peak_bytes
    assert big.retained_bytes >= 64 * 8 * 4  # the output is still live at the end
    assert big.allocated_bytes >= big.peak_bytes and big.n_allocations >= 2


def test_weights_are_not_counted_and_model_unchanged() -> None:
    m = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512)).train()
    r = measure_memory(m, torch.randn(2, 512))
    assert r.peak_bytes is not None and r.peak_bytes < 512 * 512 * 4  # weights are 1 MiB
    assert m.training
    assert int(m[1].num_batches_tracked) == 0
