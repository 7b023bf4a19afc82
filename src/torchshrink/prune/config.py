"""The one configuration object of pruning, shared by :func:`prune` and :class:`Pruner`.

Example:
    >>> cfg = PruneConfig(granularity="channel", method="l1", ratio=0.5, round_to=8)
    >>> cfg.schedule, cfg.global_
    ('oneshot', False)
    >>> PruneConfig.model_validate({"granularity": "nm", "n": 2, "m": 4, "global": True}).global_
    True
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from torchshrink.train.config import TrainConfig

Granularity = Literal["unstructured", "nm", "channel", "head", "layer"]
Schedule = Literal["oneshot", "iterative", "agp"]


class PruneConfig(BaseModel):
    """What to prune, by which criterion, how much, and on which schedule.

    Every field is validated on construction; a bad value raises ``pydantic.ValidationError``
    whose message names the field.

    Attributes:
        granularity: ``"unstructured"`` (single weights, masked), ``"nm"`` (N of every M
            consecutive weights along the input dimension kept, masked), ``"channel"``
            (conv filters / neurons physically removed), ``"head"`` (attention heads
            physically removed) or ``"layer"`` (whole residual blocks replaced by ``Identity``).
        method: importance criterion registered with
            :func:`~torchshrink.prune.importance.register_importance` (``"l1"``, ``"l2"``,
            ``"magnitude"``, ``"random"``, ``"taylor"``, ``"bn-scale"``, ``"obd"``).
        ratio: fraction to remove in ``[0, 1)``: of the weights (unstructured), of each group's
            channels or heads (structured, local), of all channels (structured, global) or of
            the removable blocks (layer). Ignored by ``"nm"`` (the pattern fixes it).
        n: weights kept in each block of ``m`` (``"nm"`` only).
        m: block length along the input dimension (``"nm"`` only).
        global_: one threshold across layers (alias ``"global"``); ``False`` prunes each layer
            (or group) by ``ratio``.
        layer_ratios: ``{name_or_regex: ratio}`` overriding ``ratio`` per layer (matched with
            ``re.fullmatch`` against module names and group labels; first match wins). With
            ``ratio=0`` the map works on its own: only the layers it names are pruned, each to
            its ratio, and schedules rise to its largest entry.
        ignore: module names or regexes never pruned.
        round_to: kept channels of a group are rounded up to a multiple of this (fast kernels).
        min_channels: at least this many channels (or heads) stay in every group.
        schedule: ``"oneshot"``; ``"iterative"`` (``steps`` rounds of prune + fine-tune, each
            removing the same fraction of what is left); ``"agp"`` (gradual, polynomial
            schedule of Zhu & Gupta 2017 during fine-tuning).
        steps: rounds of the iterative schedule.
        agp_start_step: optimizer step of the first AGP pruning (``t0``).
        agp_end_step: optimizer step where AGP reaches ``ratio`` (``t0 + n dt``); ``None``
            means 75% of the fine-tuning steps.
        agp_frequency: optimizer steps between AGP pruning events (``dt``).
        initial_sparsity: AGP sparsity at ``t0`` (``s_i``).
        finetune: training after (or during) pruning; ``None`` does not train.
        importance_batches: batches of training data used by data-driven criteria.
        importance_batch_size: their batch size.
        seed: seeds random importance and batch selection; the same seed, the same model.

    Example:
        >>> PruneConfig(ratio=0.9, schedule="iterative", steps=3).steps
        3
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    granularity: Granularity = "unstructured"
    method: str = "l1"
    ratio: float = 0.5
    n: int = Field(default=2, ge=1)
    m: int = Field(default=4, ge=2)
    global_: bool = Field(default=False, alias="global")
    layer_ratios: dict[str, float] = Field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    round_to: int = Field(default=1, ge=1)
    min_channels: int = Field(default=1, ge=1)
    schedule: Schedule = "oneshot"
    steps: int = Field(default=1, ge=1)
    agp_start_step: int = Field(default=0, ge=0)
    agp_end_step: int | None = Field(default=None, ge=1)
    agp_frequency: int = Field(default=10, ge=1)
    initial_sparsity: float = Field(default=0.0, ge=0, lt=1)
    finetune: TrainConfig | None = None
    importance_batches: int = Field(default=4, ge=1)
    importance_batch_size: int = Field(default=64, ge=1)
    seed: int = 0

    @field_validator("ratio")
    @classmethod
    def _check_ratio(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(
                f"ratio must be in [0, 1) (the fraction to remove; 1 would remove everything), "
                f"got {v}"
            )
        return v

    @field_validator("layer_ratios")
    @classmethod
    def _check_layer_ratios(cls, v: dict[str, float]) -> dict[str, float]:
        for name, r in v.items():
            if not 0.0 <= r < 1.0:
                raise ValueError(
                    f"layer_ratios['{name}'] = {r} would prune everything from that layer; "
                    "each ratio must be in [0, 1)"
                )
        return v

    @field_validator("method")
    @classmethod
    def _check_method(cls, v: str) -> str:
        from torchshrink.prune.importance import IMPORTANCE

        if v not in IMPORTANCE:
            raise ValueError(f"unknown importance '{v}'; valid names: {', '.join(IMPORTANCE)}")
        return v.lower()

    @model_validator(mode="after")
    def _check_combinations(self) -> PruneConfig:
        if self.granularity == "nm" and self.n >= self.m:
            raise ValueError(f"n: N:M pruning needs n < m, got n={self.n}, m={self.m}")
        if (
            self.agp_end_step is not None
            and self.schedule == "agp"
            and self.agp_end_step <= self.agp_start_step
        ):
            raise ValueError(
                f"agp_end_step must be after agp_start_step ({self.agp_start_step}), "
                f"got {self.agp_end_step}"
            )
        # With ratio=0 a per-layer map alone sets the final sparsity (its largest entry).
        final = self.ratio or max(self.layer_ratios.values(), default=0.0)
        if self.schedule == "agp" and self.initial_sparsity > final:
            raise ValueError(
                f"initial_sparsity ({self.initial_sparsity}) must not exceed ratio ({final})"
            )
        if self.schedule == "agp" and self.granularity == "layer":
            raise ValueError("schedule: 'agp' is not available for granularity 'layer'")
        return self

    @property
    def target_sparsity(self) -> float:
        """The final fraction removed: ``1 - n/m`` for N:M, else ``ratio``.

        Example:
            >>> PruneConfig(granularity="nm", n=2, m=8).target_sparsity
            0.75
        """
        return 1.0 - self.n / self.m if self.granularity == "nm" else self.ratio

    @property
    def structured(self) -> bool:
        """Whether the granularity physically removes parts of the model."""
        return self.granularity in ("channel", "head", "layer")
