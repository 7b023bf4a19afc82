"""Extension points of the training loop: hooks that observe or act, and extra loss terms.

Pruning re-applies its masks in :meth:`TrainHook.after_step`; distillation adds a
:class:`LossTerm`; quantization-aware training only changes the model. None of them copies the
loop.

Example:
    >>> class CountSteps(TrainHook):
    ...     def __init__(self) -> None:
    ...         self.steps = 0
    ...     def after_step(self, state: TrainState) -> None:
    ...         self.steps += 1
    >>> term = loss_term("l2", lambda model, x, y, logits: 1e-4 * sum(
    ...     (p ** 2).sum() for p in model.parameters()))
    >>> term.name
    'l2'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from torchshrink.train.config import TrainConfig


@dataclass
class TrainState:
    """What the loop passes to hooks; updated in place as training advances.

    Attributes:
        model: the model being trained.
        optimizer: its optimizer.
        scheduler: the per-step learning-rate scheduler.
        config: the :class:`~torchshrink.train.config.TrainConfig` of the run.
        epoch: current epoch, 0-based.
        step: optimizer step within the epoch, 0-based.
        global_step: optimizer steps since the start of training (continues after resume).
        loss: total loss (cross-entropy plus loss terms) of the last step, as a float.
        loss_terms: value of each named loss term at the last step.
        grad_norm: global gradient L2 norm of the last step before clipping (``None`` until the
            first step, or while ``grad_clip`` is off).
        history: per-epoch records finished so far.
        should_stop: a hook sets this to end training after the current epoch.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    config: TrainConfig
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    loss: float = float("nan")
    loss_terms: dict[str, float] = field(default_factory=dict)
    grad_norm: float | None = None
    history: list[Any] = field(default_factory=list)
    should_stop: bool = False


class TrainHook:
    """Base class of training hooks; override only the methods you need (all do nothing).

    Call order per step: forward, loss, backward, gradient clipping, :meth:`before_step`,
    ``optimizer.step()``, :meth:`after_step`, scheduler step.

    Example:
        >>> class StopAfterOneEpoch(TrainHook):
        ...     def on_epoch_end(self, state: TrainState) -> None:
        ...         state.should_stop = True
    """

    def on_train_start(self, state: TrainState) -> None:
        """Before the first epoch (after a resumed checkpoint has been loaded)."""

    def before_step(self, state: TrainState) -> None:
        """Gradients are computed (and clipped); the optimizer has not stepped yet."""

    def after_step(self, state: TrainState) -> None:
        """The optimizer has stepped; e.g. re-apply pruning masks to the weights here."""

    def on_epoch_end(self, state: TrainState) -> None:
        """After the epoch's evaluation, before its checkpoint is written."""

    def on_train_end(self, state: TrainState) -> None:
        """After the last epoch and the final evaluation."""


@runtime_checkable
class LossTerm(Protocol):
    """An extra loss: ``term(model, x, y, logits)`` returns a scalar tensor added to the loss.

    ``name`` labels its value in the progress bar and in each epoch's history.

    Example:
        >>> isinstance(loss_term("zero", lambda m, x, y, logits: logits.sum() * 0), LossTerm)
        True
    """

    name: str

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor: ...


LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NamedLossTerm:
    """A plain function turned into a :class:`LossTerm`, optionally scaled by ``weight``.

    Example:
        >>> t = NamedLossTerm("half", lambda m, x, y, logits: torch.tensor(2.0), weight=0.5)
        >>> float(t(nn.Identity(), torch.zeros(1), torch.zeros(1), torch.zeros(1)))
        1.0
    """

    name: str
    fn: LossFn
    weight: float = 1.0

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        return self.weight * self.fn(model, x, y, logits)


def loss_term(name: str, fn: LossFn, *, weight: float = 1.0) -> NamedLossTerm:
    """Wrap ``fn(model, x, y, logits) -> scalar tensor`` as a named :class:`LossTerm`.

    Example:
        >>> loss_term("l1", lambda m, x, y, logits: logits.abs().mean(), weight=0.1).weight
        0.1
    """
    return NamedLossTerm(name, fn, weight)
