"""The settings every ``auto`` search shares: data, budget, study, workers, seeds, resume.

:class:`~torchshrink.auto.AutoConfig` (per-layer compression) and
:class:`~torchshrink.auto.student_config.StudentConfig` (distillation students) both extend
:class:`SearchSettings`, so the two searches name, default and validate these fields alike and
the shared steps (:mod:`torchshrink.auto.search`, :mod:`torchshrink.auto.flow`) accept either.

Example:
    >>> s = SearchSettings(data="npz:mnist.npz", objective="latency")
    >>> s.trials, s.workers, s.study_name
    (20, 1, 'search-npz-mnist-npz-latency')
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from torchshrink.train.config import TrainConfig


class SearchSettings(BaseModel):
    """The budget, study, worker, seed and hold-out settings of a search.

    A subclass narrows ``objective`` to the objectives it measures, may give ``trials``
    another default, and names what its study name is derived from (``_study_parts``).

    Attributes:
        data: data reference (``digits``, ``npz:PATH``, ...).
        data_limit: keep only the first N samples of each split (quick runs).
        train: train the starting model (baseline or teacher) first, on the training split
            without the validation part; ``None`` uses it as loaded.
        objective: the measured quantity a candidate minimises (``"size"``, ...).
        max_accuracy_drop: the budget, a fraction (0.005 = half a point) below the starting
            model's accuracy on the validation part.
        trials: candidates to evaluate to completion (a resumed search tops up to this many).
        workers: worker processes on this machine, all sharing one study.
        storage: optuna storage URL; ``None`` is ``sqlite:///<out>/study.db``.
        study: study name; ``None`` derives it (see :attr:`study_name`).
        seed: seeds the data split, the sampler and training.
        val_size: samples of the training split held out to score candidates.
        search_train_size: training samples each candidate trains on (``None``: all that are
            not held out).
        latency_repeats: timed forward passes per latency measurement (median used).
        threads: torch threads in every process (``None`` keeps the default).
        stale_after: seconds after which a RUNNING trial of a shared storage counts as lost.
        search_only: only run trials (a helper on a shared database); no final model.

    Example:
        >>> SearchSettings(study="mine").study_name
        'mine'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # prefix of a derived study name
    study_prefix: ClassVar[str] = "search"

    data: str = "digits"
    data_limit: int | None = Field(default=None, ge=1)
    train: TrainConfig | None = None
    objective: str = "size"
    max_accuracy_drop: float = Field(default=0.005, ge=0, lt=1)
    trials: int = Field(default=20, ge=1)
    workers: int = Field(default=1, ge=1)
    storage: str | None = None
    study: str | None = None
    seed: int = 0
    val_size: int = Field(default=2000, ge=1)
    search_train_size: int | None = Field(default=10000, ge=1)
    latency_repeats: int = Field(default=30, ge=1)
    threads: int | None = Field(default=1, ge=1)
    stale_after: float = Field(default=600.0, gt=0)
    search_only: bool = False

    def _study_parts(self) -> tuple[str, ...]:
        # what a derived study name is made of: enough to keep different searches apart
        return (self.data, self.objective)

    @property
    def study_name(self) -> str:
        """``study``, or ``<prefix>-<parts>``: each part reduced to at most its last 40
        letters, digits and dashes."""
        if self.study:
            return self.study
        slug = "-".join(
            re.sub(r"[^A-Za-z0-9]+", "-", part).strip("-")[-40:] for part in self._study_parts()
        )
        return f"{self.study_prefix}-{slug}"
