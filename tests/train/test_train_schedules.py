"""Optimizers and per-step learning-rate schedules give the expected LR at chosen steps."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.train.config import TrainConfig
from torchshrink.train.schedules import build_optimizer, build_scheduler


def lrs(config: TrainConfig, steps_per_epoch: int) -> list[float]:
    """The LR used at every optimizer step of a whole run."""
    opt = build_optimizer(nn.Linear(2, 2), config)
    sched = build_scheduler(opt, config, steps_per_epoch=steps_per_epoch)
    out = []
    for _ in range(config.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_warmup_then_constant() -> None:
    got = lrs(TrainConfig(epochs=3, lr=0.2, schedule="constant", warmup_epochs=1), 10)
    assert got[:10] == pytest.approx([0.2 * (s + 1) / 10 for s in range(10)])
    assert got[10:] == pytest.approx([0.2] * 20)


def test_fractional_warmup() -> None:
    got = lrs(TrainConfig(epochs=2, lr=1.0, schedule="constant", warmup_epochs=0.5), 8)
    assert got[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_cosine_starts_at_lr_halves_midway_and_ends_near_zero() -> None:
    got = lrs(TrainConfig(epochs=4, lr=0.1, schedule="cosine"), 25)  # 100 steps
    assert got[0] == pytest.approx(0.1)
    assert got[50] == pytest.approx(0.05)
    assert got[25] == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert got[-1] < 1e-4
    assert all(a >= b for a, b in itertools.pairwise(got))


def test_cosine_after_warmup_peaks_at_lr() -> None:
    got = lrs(TrainConfig(epochs=5, lr=0.1, schedule="cosine", warmup_epochs=1), 10)
    assert max(got) == pytest.approx(0.1)
    assert got.index(max(got)) in (9, 10)
    assert got[0] == pytest.approx(0.01)
    assert got[-1] < 1e-3


def test_step_decays_by_gamma_every_step_size_epochs() -> None:
    got = lrs(TrainConfig(epochs=6, lr=0.1, schedule="step", step_size=2, gamma=0.1), 5)
    assert got[9] == pytest.approx(0.1)
    assert got[10] == pytest.approx(0.01)
    assert got[19] == pytest.approx(0.01)
    assert got[20] == pytest.approx(0.001)


def test_step_with_warmup_composes() -> None:
    got = lrs(
        TrainConfig(epochs=4, lr=0.1, schedule="step", step_size=2, gamma=0.5, warmup_epochs=1), 4
    )
    assert got[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert got[8] == pytest.approx(0.05)


def test_onecycle_rises_to_lr_then_anneals() -> None:
    got = lrs(TrainConfig(epochs=10, lr=0.1, schedule="onecycle", warmup_epochs=2), 10)
    peak = got.index(max(got))
    assert max(got) == pytest.approx(0.1, rel=1e-3)
    assert 18 <= peak <= 20
    assert got[0] == pytest.approx(0.1 / 25, rel=1e-3)
    assert got[-1] < 1e-4


def test_optimizers_carry_config() -> None:
    sgd = build_optimizer(
        nn.Linear(2, 2), TrainConfig(momentum=0.8, nesterov=True, weight_decay=0.01)
    )
    assert isinstance(sgd, torch.optim.SGD)
    group: dict[str, Any] = sgd.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.8, True, 0.01)
    adamw = build_optimizer(
        nn.Linear(2, 2), TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.05)
    )
    assert isinstance(adamw, torch.optim.AdamW)
    assert adamw.param_groups[0]["weight_decay"] == 0.05


def test_no_trainable_parameters_is_a_config_error() -> None:
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ConfigError, match="Linear has no trainable parameters"):
        build_optimizer(frozen, TrainConfig())
