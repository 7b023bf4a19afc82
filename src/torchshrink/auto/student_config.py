"""The configuration of a distillation-student search (:func:`torchshrink.auto.student.run_student_search`).

The search shares the budget, objective, storage, worker and resume settings of
:class:`~torchshrink.auto.AutoConfig` (both extend
:class:`~torchshrink.auto.settings.SearchSettings`); what differs is what a candidate is: a
member of a zoo family built with ``width`` / ``depth`` multipliers and distilled from the
teacher.

Example:
    >>> cfg = StudentConfig(teacher="zoo:lenet5", student="zoo:lenet5", data="digits")
    >>> cfg.objective, cfg.widths[:3], cfg.study_name
    ('size', (0.125, 0.25, 0.375), 'student-zoo-lenet5-zoo-lenet5-digits-size')
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from torchshrink.auto.settings import SearchSettings
from torchshrink.distill.distiller import DistillConfig
from torchshrink.train.config import TrainConfig

StudentObjective = Literal["size", "latency"]
DEFAULT_WIDTHS = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0)
DEFAULT_DEPTHS = (0.5, 1.0, 1.5)


def student_train(epochs: int, *, lr: float = 0.05) -> TrainConfig:
    """The default training of a student distilled from scratch.

    SGD with Nesterov momentum, one warm-up epoch and a cosine decay, gradients clipped at norm
    5 (the ``T^2``-scaled soft-target loss of an untrained student can blow up plain SGD at
    this learning rate: LeNet-5 on MNIST diverged within 11 steps without warm-up), no label
    smoothing (the soft targets already smooth), quiet.

    Example:
        >>> student_train(3).warmup_epochs, student_train(3, lr=0.02).lr
        (1.0, 0.02)
    """
    return TrainConfig(
        epochs=epochs,
        batch_size=64,
        lr=lr,
        nesterov=True,
        schedule="cosine",
        warmup_epochs=1,
        grad_clip=5.0,
        show_progress=False,
    )


class StudentConfig(SearchSettings):
    """Which teacher, which student family and multipliers, under which accuracy budget.

    Attributes:
        teacher: teacher model reference (a model file, ``zoo:NAME`` trained with ``train``).
        teacher_args: the teacher's factory options.
        student: the student family, ``zoo:NAME`` of a zoo model that takes ``width`` and / or
            ``depth`` (``lenet5``: width; ``lenet300``: width and depth).
        student_args: fixed factory options of every student (the data's classes, channels
            and input size are filled in).
        data: data reference (``digits``, ``npz:PATH``, ...).
        data_limit: keep only the first N samples of each split (quick runs).
        train: train the teacher first, on the training split without the validation part;
            ``None`` uses the teacher as loaded.
        objective: ``"size"`` (bytes of the student's saved model file) or ``"latency"``
            (measured median milliseconds of one forward pass).
        max_accuracy_drop: the budget, a fraction below the teacher's validation accuracy.
        trials: candidates to evaluate to completion (a resumed search tops up to this many).
        workers: worker processes on this machine, all sharing one study.
        storage: optuna storage URL; ``None`` is ``sqlite:///<out>/study.db``.
        study: study name; ``None`` derives it from student, teacher, data and objective.
        seed: seeds the data split, the sampler, the students' initial weights and training.
        val_size: samples of the training split held out to score candidates.
        search_train_size: training samples each candidate is distilled on (``None``: all
            that are not held out).
        widths: width multipliers to choose from (each above 0).
        depths: depth multipliers to choose from (each above 0); used only by families that
            take ``depth``.
        distill: the distillation losses (soft targets; see :class:`DistillConfig`).
        trial_train: training of each candidate (distillation through the one training loop).
        final_train: training of the chosen student on the whole training split before its
            test-split verification; ``None`` repeats ``trial_train``.
        latency_repeats: timed forward passes per latency measurement (median used).
        threads: torch threads in every process (``None`` keeps the default).
        stale_after: seconds after which a RUNNING trial of a shared storage counts as lost.
        search_only: only run trials (a helper on a shared database); no final model.

    Example:
        >>> StudentConfig(teacher="t.safetensors", student="zoo:lenet300", widths=(0.5,)).depths
        (0.5, 1.0, 1.5)
    """

    study_prefix: ClassVar[str] = "student"

    teacher: str
    teacher_args: dict[str, Any] = Field(default_factory=dict)
    student: str
    student_args: dict[str, Any] = Field(default_factory=dict)
    objective: StudentObjective = "size"
    trials: int = Field(default=12, ge=1)
    widths: tuple[float, ...] = DEFAULT_WIDTHS
    depths: tuple[float, ...] = DEFAULT_DEPTHS
    distill: DistillConfig = Field(default_factory=DistillConfig)
    trial_train: TrainConfig = Field(default_factory=lambda: student_train(3))
    final_train: TrainConfig | None = Field(default_factory=lambda: student_train(10))

    def _study_parts(self) -> tuple[str, ...]:
        return (self.student, self.teacher, self.data, self.objective)
