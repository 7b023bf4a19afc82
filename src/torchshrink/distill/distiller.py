"""Knowledge distillation through the one training loop: :class:`DistillConfig`, the loss terms,
and :func:`distill`.

**How alpha mixes the hard and soft losses.** The training loop adds its own cross-entropy on
the hard labels, weighted by :attr:`TrainConfig.ce_weight`. The soft-target term returns
``alpha * T^2 * KL``; :func:`distill` sets ``ce_weight = (1 - alpha) * train_config.ce_weight``,
so the total is ``(1 - alpha) * CE + alpha * T^2 * KL (+ hints + attention)``. With ``alpha = 1``
the labels play no part at all. When you plug :func:`distill_loss_terms` into ``train()``
yourself (e.g. for pruning fine-tuning or QAT), set ``ce_weight=1 - alpha`` in your config for
the same mix.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torch.utils.data import TensorDataset
    >>> from torchshrink.core.databundle import DataBundle
    >>> from torchshrink.train.config import TrainConfig
    >>> x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
    >>> data = DataBundle("toy", TensorDataset(x, y), TensorDataset(x, y), 3, (4,))
    >>> cfg = TrainConfig(epochs=1, show_progress=False)
    >>> r = distill(nn.Linear(4, 3), nn.Linear(4, 3), data, DistillConfig(), train_config=cfg)
    >>> sorted(r.history[0].loss_terms)
    ['kd']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError
from torchshrink.distill.check import check_teacher
from torchshrink.distill.teacher import Teacher, as_teacher
from torchshrink.distill.terms import (
    AttentionTerm,
    HintTerm,
    SoftTargetTerm,
    StudentTaps,
    TeacherPass,
)
from torchshrink.train.config import TrainConfig
from torchshrink.train.hooks import LossTerm, TrainHook
from torchshrink.train.loop import TrainResult, train


class DistillConfig(BaseModel):
    """What the student learns from the teacher.

    Attributes:
        temperature: softmax temperature ``T`` of the soft targets (Hinton et al. used 20 on
            MNIST; 2-8 is common for CNNs).
        alpha: weight of the soft-target loss; the hard-label cross-entropy gets ``1 - alpha``.
        features: FitNets / attention pairs ``{student_layer: teacher_layer}`` (names from
            ``named_modules()``); empty for logits-only distillation.
        feature_weight: weight of the summed hint (MSE) losses over ``features``.
        attention_weight: weight of the summed attention-transfer losses over ``features``
            (only 4-D feature maps); ``0`` disables attention transfer.
        attention_p: exponent of the attention maps.
        adapter_lr: Adam learning rate of the hint adapters.
        cache: precompute the teacher's logits over the training split once (see
            :mod:`torchshrink.distill.teacher`); only logits are cached.

    Example:
        >>> DistillConfig(temperature=20, alpha=1.0).alpha
        1.0
        >>> DistillConfig(features={"layer2": "layer3"}, attention_weight=1e3).feature_weight
        1.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.9, ge=0, le=1)
    features: dict[str, str] = Field(default_factory=dict)
    feature_weight: float = Field(default=1.0, ge=0)
    attention_weight: float = Field(default=0.0, ge=0)
    attention_p: float = Field(default=2.0, gt=0)
    adapter_lr: float = Field(default=1e-3, gt=0)
    cache: bool = False

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if self.attention_weight > 0 and not self.features:
            raise ValueError(
                "attention_weight: attention transfer needs layer pairs in 'features', got none"
            )
        return self


def distill_loss_terms(
    student: nn.Module,
    teacher: Teacher | nn.Module | Sequence[nn.Module],
    config: DistillConfig | None = None,
) -> list[LossTerm]:
    """The distillation loss terms for ``train(student, data, ..., loss_terms=...)``.

    Returns up to three terms sharing one teacher pass per batch: ``kd`` (``alpha * T^2 *
    KL``, when ``alpha > 0``), ``hint`` (when ``features`` and ``feature_weight > 0``) and
    ``at`` (when ``attention_weight > 0``). The feature terms put forward hooks on the
    student's named layers: call ``term.close()`` on each returned term when training is done.
    The hard-label part is the loop's cross-entropy: train with ``ce_weight = 1 - alpha``.

    Args:
        student: the model that will be trained.
        teacher: a :class:`Teacher`, a model, or a sequence of models (an ensemble).
        config: distillation settings; ``DistillConfig()`` when ``None``.

    Raises:
        ConfigError: a layer named in ``config.features`` does not exist.

    Example:
        >>> from torch import nn
        >>> s = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> t = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
        >>> terms = distill_loss_terms(s, t, DistillConfig(features={"1": "1"}))
        >>> [term.name for term in terms]
        ['kd', 'hint']
        >>> for term in terms: term.close()
    """
    config = config or DistillConfig()
    t = as_teacher(teacher, cache=config.cache)
    use_hint = bool(config.features) and config.feature_weight > 0
    use_at = bool(config.features) and config.attention_weight > 0
    layers = list(config.features.values()) if (use_hint or use_at) else []
    shared = TeacherPass(t, layers)
    terms: list[Any] = []
    if config.alpha > 0:
        terms.append(SoftTargetTerm(shared, temperature=config.temperature, weight=config.alpha))
    if use_hint or use_at:
        # Check the teacher layer names now rather than on the first batch.
        for i, member in enumerate(t.members):
            names = dict(member.named_modules())
            for t_name in layers:
                if t_name not in names:
                    raise ConfigError(f"distill: teacher {i} has no layer named '{t_name}'")
        taps = StudentTaps(student, list(config.features))
        if use_hint:
            terms.append(
                HintTerm(
                    shared,
                    taps,
                    pairs=config.features,
                    weight=config.feature_weight,
                    adapter_lr=config.adapter_lr,
                )
            )
        if use_at:
            terms.append(
                AttentionTerm(
                    shared,
                    taps,
                    pairs=config.features,
                    weight=config.attention_weight,
                    p=config.attention_p,
                )
            )
    return terms


def distill(
    student: nn.Module,
    teacher: Teacher | nn.Module | Sequence[nn.Module],
    data: DataBundle,
    config: DistillConfig | None = None,
    *,
    train_config: TrainConfig | None = None,
    hooks: Sequence[TrainHook] = (),
) -> TrainResult:
    """Train ``student`` **in place** to imitate ``teacher`` (one model or an ensemble).

    Runs :func:`~torchshrink.train.loop.train` with the terms of :func:`distill_loss_terms`
    and ``ce_weight = (1 - alpha) * train_config.ce_weight``. With ``config.cache`` the
    teacher's logits over ``data.train`` are computed once before training. The teacher stays
    in eval mode and its weights get no gradient. Forward hooks are removed afterwards.

    Args:
        student: the model to train (changed in place).
        teacher: a :class:`Teacher`, a trained model, or a sequence of trained models.
        data: a classification :class:`DataBundle`.
        config: distillation settings; ``DistillConfig()`` when ``None``.
        train_config: training settings; ``TrainConfig()`` when ``None``.
        hooks: training hooks (e.g. pruning masks) passed to the loop.

    Returns:
        The loop's :class:`~torchshrink.train.loop.TrainResult` (``loss_terms`` of each epoch
        hold the mean ``kd`` / ``hint`` / ``at`` values).

    Raises:
        ConfigError: a teacher model is the student, does not run on the training inputs, or
            gives logits of another shape than the student (checked on one batch before
            training; the message names the teacher, by index in an ensemble, and both shapes).
        ShapeError: the student does not take the training inputs (names the layer).

    Example:
        >>> import torchshrink
        >>> from torch import nn
        >>> from torchshrink.train.config import TrainConfig
        >>> data = torchshrink.load_data("digits", limit=128)
        >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> cfg = TrainConfig(epochs=1, show_progress=False)
        >>> 0 <= distill(student, teacher, data, train_config=cfg).final_accuracy <= 1
        True
    """
    config = config or DistillConfig()
    base = train_config or TrainConfig()
    if isinstance(data, DataBundle) and data.task == "classification":  # else train() refuses it
        # Before the teacher's pass over the data and before any step: a misfit fails by name.
        example = data.example_inputs(2, split="train")  # (2, *input_shape)
        t = check_teacher(teacher, student, example, cache=config.cache)
    else:
        t = as_teacher(teacher, cache=config.cache)
    if config.cache and t.cached_samples == 0:
        t.precompute(data.train, batch_size=max(base.batch_size, 256))
    terms = distill_loss_terms(student, t, config)
    mixed = base.model_copy(update={"ce_weight": base.ce_weight * (1.0 - config.alpha)})
    try:
        return train(student, data, mixed, hooks=hooks, loss_terms=terms)
    finally:
        for term in terms:
            term.close()  # type: ignore[attr-defined]
