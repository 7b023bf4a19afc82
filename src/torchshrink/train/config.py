"""The one configuration object of the training loop, shared by fine-tuning, QAT and distillation.

Example:
    >>> cfg = TrainConfig(epochs=3, lr=0.05, schedule="cosine", warmup_epochs=1)
    >>> cfg.optimizer, cfg.batch_size
    ('sgd', 128)
    >>> TrainConfig.preset("lenet-mnist").epochs
    15
    >>> TrainConfig.preset("finetune", epochs=2).lr
    0.01
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from torchshrink.core.errors import ConfigError

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["constant", "step", "cosine", "onecycle"]
Augment = Literal["shift2"]


class TrainConfig(BaseModel):
    """How to train: optimizer, learning-rate schedule, regularisation, stopping and checkpoints.

    Every field is validated on construction; a bad value raises ``pydantic.ValidationError``
    whose message names the field. Learning-rate schedules are stepped once per optimizer step.

    Attributes:
        epochs: passes over the training split; ``0`` only evaluates.
        batch_size: samples per optimizer step.
        optimizer: ``"sgd"`` (with ``momentum`` / ``nesterov``) or ``"adamw"``.
        lr: peak learning rate (reached after warm-up).
        momentum: SGD momentum (ignored by AdamW).
        nesterov: Nesterov momentum for SGD; needs ``momentum > 0``.
        weight_decay: decoupled for AdamW, L2 added to the gradient for SGD (PyTorch semantics).
        schedule: ``"constant"``, ``"step"`` (multiply by ``gamma`` every ``step_size`` epochs),
            ``"cosine"`` (from ``lr`` to 0 after warm-up) or ``"onecycle"``.
        step_size: epochs between decays of the ``"step"`` schedule.
        gamma: decay factor of the ``"step"`` schedule.
        warmup_epochs: linear warm-up from ``lr / steps`` to ``lr`` over this many (possibly
            fractional) epochs, for every schedule; for ``"onecycle"`` it sets the rising phase
            (default 30% of training when 0).
        label_smoothing: cross-entropy label smoothing in ``[0, 1)``.
        ce_weight: weight of the loop's cross-entropy on the hard labels (``1.0``); distillation
            sets it to ``1 - alpha`` so that ``alpha = 1`` trains on soft targets only.
        grad_clip: clip the global gradient L2 norm to this value; ``None`` disables clipping.
        dropout: ``None`` leaves the model's dropout layers alone; a float sets every dropout
            layer's ``p`` (the model is changed in place).
        augment: ``"shift2"`` shifts each training image by a random -2..2 pixels in x and y
            (edge pixels repeated); ``None`` trains on the data as given. Needs ``(B, C, H, W)``.
        seed: seeds shuffling, dropout and augmentation; the same seed gives the same weights.
        early_stop_patience: stop after this many epochs without test-accuracy improvement;
            ``None`` never stops early.
        eval_every: evaluate the test split every this many epochs (and always after the last).
        checkpoint_dir: where to save the training state after every epoch; ``None`` saves nothing.
        resume: continue from the checkpoint in ``checkpoint_dir`` if there is one.
        show_progress: show a rich progress bar (only when the output is a terminal).
        num_threads: ``torch.set_num_threads`` for the run (restored afterwards); ``None`` keeps it.

    Example:
        >>> TrainConfig(optimizer="adamw", lr=1e-3, weight_decay=0.01).schedule
        'cosine'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(default=10, ge=0)
    batch_size: int = Field(default=128, ge=1)
    optimizer: Optimizer = "sgd"
    lr: float = Field(default=0.1, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Schedule = "cosine"
    step_size: int = Field(default=10, ge=1)
    gamma: float = Field(default=0.1, gt=0, le=1)
    warmup_epochs: float = Field(default=0.0, ge=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    ce_weight: float = Field(default=1.0, ge=0)
    grad_clip: float | None = Field(default=None, gt=0)
    dropout: float | None = Field(default=None, ge=0, lt=1)
    augment: Augment | None = None
    seed: int = 0
    early_stop_patience: int | None = Field(default=None, ge=1)
    eval_every: int = Field(default=1, ge=1)
    checkpoint_dir: Path | None = None
    resume: bool = False
    show_progress: bool = True
    num_threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.nesterov and self.optimizer == "sgd" and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0, got momentum=0")
        if self.epochs > 0 and self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs: must not exceed epochs ({self.epochs}), got {self.warmup_epochs}"
            )
        if self.schedule == "onecycle" and self.warmup_epochs >= self.epochs > 0:
            raise ValueError(
                "warmup_epochs: the onecycle schedule needs warmup_epochs < epochs "
                f"({self.epochs}) to leave room for the annealing phase, got {self.warmup_epochs}"
            )
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume: resume=True needs a checkpoint_dir to resume from")
        return self

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A named, tested configuration, optionally with some fields replaced.

        Presets:
            ``scratch``: the command line's default for training from scratch.
            ``lenet-mnist``: LeNet-300-100 on MNIST from scratch without augmentation, about
            1.2-1.3% test error in 15 epochs (see ``benchmarks/train_lenet300.py``).
            ``digits``: a small net on scikit-learn's digits in seconds.
            ``finetune``: short, low learning-rate recovery after pruning or quantization.

        Args:
            name: preset name (case-insensitive).
            **overrides: fields to replace; validated like the constructor.

        Raises:
            ConfigError: ``name`` is not a preset; the message lists the valid names.

        Example:
            >>> TrainConfig.preset("digits", seed=3).seed
            3
        """
        base = _PRESETS.get(name.lower())
        if base is None:
            valid = ", ".join(sorted(_PRESETS))
            raise ConfigError(f"unknown TrainConfig preset '{name}'; valid names: {valid}")
        return cls(**{**base, **overrides})

    @staticmethod
    def preset_names() -> list[str]:
        """Names accepted by :meth:`preset`.

        Example:
            >>> "lenet-mnist" in TrainConfig.preset_names()
            True
        """
        return sorted(_PRESETS)


# Field values of each preset. "lenet-mnist" is the configuration measured by
# benchmarks/train_lenet300.py (results in benchmarks/results/train_lenet300.json).

# Training from scratch that is robust across the zoo (Nesterov SGD, warm-up + cosine, label
# smoothing): `torchshrink train` uses it when no preset is named, and it is also the measured
# LeNet-300-100 / MNIST configuration.
_SCRATCH: dict[str, Any] = {
    "epochs": 15,
    "batch_size": 128,
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "warmup_epochs": 1,
    "label_smoothing": 0.1,
}

_PRESETS: dict[str, dict[str, Any]] = {
    "scratch": _SCRATCH,
    "lenet-mnist": _SCRATCH,
    "digits": {
        "epochs": 10,
        "batch_size": 64,
        "optimizer": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "warmup_epochs": 1,
    },
    "finetune": {
        "epochs": 5,
        "batch_size": 128,
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "schedule": "cosine",
        "warmup_epochs": 0,
    },
}
