"""The configuration of an automatic compression search (:func:`torchshrink.auto.run_auto`).

Example:
    >>> cfg = AutoConfig(model="zoo:lenet5", data="npz:mnist.npz", max_accuracy_drop=0.005)
    >>> cfg.objective, cfg.trials, cfg.workers
    ('size', 20, 1)
    >>> cfg.study_name
    'auto-zoo-lenet5-npz-mnist-npz-size'
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from torchshrink.auto.settings import SearchSettings
from torchshrink.distill.distiller import DistillConfig
from torchshrink.train.config import TrainConfig

Objective = Literal["size", "latency", "energy"]
# bits of a k-means codebook per layer; 0 keeps the layer in float
DEFAULT_BITS = (0, 2, 3, 4, 5, 6, 8)
DEFAULT_RATIOS = (0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98)


def _quick(epochs: int, lr: float | None = None) -> TrainConfig:
    extra = {} if lr is None else {"lr": lr}
    return TrainConfig.preset("finetune", epochs=epochs, show_progress=False, **extra)


class AutoConfig(SearchSettings):
    """What to search, under which accuracy budget, optimising which measured objective.

    The budget, study, worker and hold-out settings are those of
    :class:`~torchshrink.auto.settings.SearchSettings`, shared with the student search.

    Attributes:
        model: model reference (``zoo:NAME``, a model file, ``file.py:factory``, ...).
        model_args: factory options.
        data: data reference (``digits``, ``npz:PATH``, ...).
        data_limit: keep only the first N samples of each split (quick runs).
        train: train the model before searching (a zoo model trained on the spot); ``None``
            uses the model as loaded.
        objective: ``"size"`` (bytes of the saved compressed file), ``"latency"`` (measured
            median milliseconds of one forward pass) or ``"energy"`` (the profile's estimate).
        max_accuracy_drop: the budget, as a fraction (0.005 = half a point) below the model's
            own baseline accuracy measured on the same validation subset.
        trials: candidates to evaluate to completion (a resumed search tops up to this many).
        workers: worker processes on this machine, all sharing one study.
        storage: optuna storage URL; ``None`` is ``sqlite:///<out>/study.db``.
        study: study name; ``None`` derives it from model, data and objective.
        seed: seeds the data split, the sampler and training.
        val_size: samples of the training split held out to score candidates (the test split
            is used once, on the chosen candidate).
        search_train_size: training samples each candidate is fine-tuned on (``None``: all
            that are not held out).
        ratios: the pruning-ratio grid; per layer it is cut at the largest ratio whose
            sensitivity drop (no fine-tuning) stays within ``sensitivity_slack``.
        bits: codebook bits per layer to choose from (``0`` keeps float). Used by ``size``.
        sensitivity_slack: allowed one-layer drop before fine-tuning, as a multiple of
            ``max_accuracy_drop`` (at least 2 points), bounding each layer's ratios.
        trial_finetune: training of each candidate after (with ``agp``: during) pruning
            (``None``: none). Short, with a higher learning rate than the final one.
        agp: prune unstructured candidates gradually during their fine-tune (AGP) rather
            than at once before it; the final model is built the same way.
        centroid_finetune: fine-tuning of shared centroids of each candidate (``None``: none).
        final_finetune: training of the chosen candidate before its test-split verification;
            also the full fine-tune of every promoted candidate.
        promote: after the search, candidates given the full fine-tune (``final_finetune``)
            on the search-training part and re-scored on the validation part; the smallest
            that then meets the budget is chosen. ``0`` chooses from the search scores only.
        promote_slack: a Pareto candidate may be promoted when its search-time drop is at
            most ``max_accuracy_drop + promote_slack`` (short fine-tunes under-rate sparse
            candidates).
        distill: distil from the dense baseline (soft targets, ``alpha`` / ``temperature`` of
            :class:`DistillConfig`) during the pruning fine-tune of the trials, the promoted
            candidates and the final model (not the centroid fine-tune: see
            :func:`~torchshrink.auto.objective.build_candidate`). ``None``: labels only.
        promote_train_size: training samples of a promoted candidate's fine-tune (``None``:
            every training sample that is not held out).
        latency_repeats: timed forward passes per latency measurement (median used).
        threads: torch threads in every process (``None`` keeps the default).
        search_only: only run trials (e.g. a helper machine on a shared database); no final
            model, run.json or report.
        stale_after: seconds after which a RUNNING trial of a shared (non-default) storage
            without heartbeat counts as lost and is re-run.

    Example:
        >>> AutoConfig(model="zoo:lenet5", data="digits", objective="latency").bits
        (0, 2, 3, 4, 5, 6, 8)
    """

    study_prefix: ClassVar[str] = "auto"

    model: str
    model_args: dict[str, Any] = Field(default_factory=dict)
    objective: Objective = "size"
    ratios: tuple[float, ...] = DEFAULT_RATIOS
    bits: tuple[int, ...] = DEFAULT_BITS
    sensitivity_slack: float = Field(default=6.0, gt=0)
    trial_finetune: TrainConfig | None = Field(default_factory=lambda: _quick(2, lr=0.02))
    agp: bool = True
    centroid_finetune: TrainConfig | None = Field(default_factory=lambda: _quick(1))
    final_finetune: TrainConfig | None = Field(default_factory=lambda: _quick(3))
    promote: int = Field(default=3, ge=0)
    promote_slack: float = Field(default=0.02, ge=0, lt=1)
    promote_train_size: int | None = Field(default=None, ge=1)
    distill: DistillConfig | None = None

    def _study_parts(self) -> tuple[str, ...]:
        return (self.model, self.data, self.objective)
