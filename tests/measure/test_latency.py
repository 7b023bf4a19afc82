"""measure_latency: p50 / p90, throughput, thread setting applied and restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.measure.latency import measure_latency


def convnet() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))


def test_latency_fields_and_thread_count_restored() -> None:
    before = torch.get_num_threads()
    r = measure_latency(convnet(), torch.randn(4, 1, 28, 28), threads=1, warmup=1, repeats=7)
    assert torch.get_num_threads() == before
    assert r.threads == 1
    assert r.batch_size == 4
    assert len(r.samples_ms) == 7 and not r.capped
    assert min(r.samples_ms) == r.min_ms > 0
    assert r.p90_ms >= r.p50_ms > 0
    assert r.median_ms == r.p50_ms == sorted(r.samples_ms)[3]  # the middle of 7
    assert r.throughput == pytest.approx(4 / (r.p50_ms / 1000))


def test_default_threads_reports_current_setting() -> None:
    r = measure_latency(nn.Linear(4, 4), torch.zeros(2, 4), repeats=2)
    assert r.threads == torch.get_num_threads()


def test_time_cap_stops_early_but_times_at_least_once() -> None:
    r = measure_latency(convnet(), torch.randn(1, 1, 28, 28), repeats=1000, max_seconds=0.0)
    assert len(r.samples_ms) == 1 and r.capped


def test_mode_restored_and_bad_settings_rejected() -> None:
    m = convnet().train()
    measure_latency(m, torch.randn(1, 1, 28, 28), repeats=2)
    assert m.training
    with pytest.raises(ConfigError, match=r"'threads'.*0"):
        measure_latency(m, torch.randn(1, 1, 28, 28), threads=0)
    with pytest.raises(ConfigError, match="'repeats'"):
        measure_latency(m, torch.randn(1, 1, 28, 28), repeats=0)
