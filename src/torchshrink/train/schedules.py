"""Optimizer and per-step learning-rate scheduler built from a :class:`TrainConfig`.

Every schedule is stepped once per optimizer step, so warm-up and decay are smooth within an
epoch and a resumed run continues at exactly the same learning rate.

Example:
    >>> from torch import nn
    >>> cfg = TrainConfig(epochs=2, lr=0.1, schedule="cosine", warmup_epochs=1)
    >>> opt = build_optimizer(nn.Linear(2, 2), cfg)
    >>> sched = build_scheduler(opt, cfg, steps_per_epoch=4)
    >>> round(opt.param_groups[0]["lr"], 3)  # first warm-up step: lr / 4
    0.025
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from torchshrink.core.errors import ConfigError
from torchshrink.train.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``config.optimizer`` over the trainable parameters of ``model``.

    Args:
        model: the module whose parameters with ``requires_grad`` are optimised.
        config: supplies ``optimizer``, ``lr``, ``momentum``, ``nesterov``, ``weight_decay``.

    Raises:
        ConfigError: the model has no trainable parameters.

    Example:
        >>> opt = build_optimizer(nn.Linear(3, 1), TrainConfig(optimizer="adamw", lr=1e-3))
        >>> type(opt).__name__
        'AdamW'
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(
            f"train: model {type(model).__name__} has no trainable parameters (requires_grad=True)"
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


def lr_factor(config: TrainConfig, *, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of ``config.lr`` used at optimizer step ``s`` (0-based) for LambdaLR.

    Warm-up is linear: step ``s < W`` uses ``(s + 1) / W``. After warm-up, ``"constant"`` keeps
    1, ``"step"`` multiplies by ``gamma`` every ``step_size`` epochs (counted from the start of
    training) and ``"cosine"`` follows half a cosine from 1 at the end of warm-up towards 0
    (reached one step after the last). ``"onecycle"`` is not expressed here (see :func:`build_scheduler`).

    Example:
        >>> f = lr_factor(TrainConfig(epochs=4, schedule="step", step_size=2, gamma=0.5),
        ...               steps_per_epoch=10)
        >>> f(0), f(19), f(20), f(39)
        (1.0, 1.0, 0.5, 0.5)
    """
    total = max(config.epochs * steps_per_epoch, 1)
    warm = min(round(config.warmup_epochs * steps_per_epoch), total)
    decay_every = config.step_size * steps_per_epoch

    def factor(step: int) -> float:
        warm_f = (step + 1) / warm if step < warm else 1.0
        if config.schedule == "step":
            return warm_f * config.gamma ** (step // decay_every)
        if config.schedule == "cosine":
            # Decay starts after warm-up at the full rate; the last step (total - 1) is 1/span
            # short of the end, so its update is tiny but not wasted.
            span = max(total - warm, 1)
            progress = min(max(step - warm, 0) / span, 1.0)
            return warm_f * 0.5 * (1.0 + math.cos(math.pi * progress))
        return warm_f

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, *, steps_per_epoch: int
) -> LRScheduler:
    """A scheduler to step once after every optimizer step.

    ``"onecycle"`` uses :class:`torch.optim.lr_scheduler.OneCycleLR` with ``max_lr=lr``, cosine
    annealing and a rising phase of ``warmup_epochs`` (30% of training if 0); momentum is not
    cycled, so the configured ``momentum`` holds. All other schedules are one
    :class:`~torch.optim.lr_scheduler.LambdaLR` over :func:`lr_factor`, whose state (the step
    count) is all a checkpoint needs to store.

    Args:
        optimizer: built by :func:`build_optimizer` from the same config.
        config: supplies the schedule fields and ``epochs``.
        steps_per_epoch: optimizer steps in one epoch (batches of the training loader).

    Raises:
        ConfigError: ``steps_per_epoch`` is not positive.

    Example:
        >>> opt = build_optimizer(nn.Linear(2, 2), TrainConfig(lr=0.1))
        >>> s = build_scheduler(opt, TrainConfig(schedule="onecycle", epochs=2), steps_per_epoch=5)
        >>> type(s).__name__
        'OneCycleLR'
    """
    if steps_per_epoch < 1:
        raise ConfigError(f"train: steps_per_epoch must be positive, got {steps_per_epoch}")
    if config.schedule == "onecycle":
        total = max(config.epochs * steps_per_epoch, 2)
        warm = round(config.warmup_epochs * steps_per_epoch)
        pct = warm / total if warm > 0 else 0.3
        return OneCycleLR(
            optimizer,
            max_lr=config.lr,
            total_steps=total,
            pct_start=min(pct, 0.99),
            anneal_strategy="cos",
            cycle_momentum=False,
        )
    return LambdaLR(optimizer, lr_factor(config, steps_per_epoch=steps_per_epoch))
