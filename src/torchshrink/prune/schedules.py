"""Pruning schedules: the sparsity target after each step, and which steps prune.

The target is a fraction of the original weights (or channels) removed. It rises to the
schedule's *final* sparsity (:func:`final_sparsity`): ``ratio`` normally, or, when only a
per-layer map is given (``ratio=0``), the largest per-layer ratio. Each layer's own ratio
follows the schedule in proportion (:func:`scaled_ratio`).

* ``oneshot``: the final sparsity at the first step.
* ``iterative``: ``s_k = 1 - (1 - s_f)^(k / K)`` after step ``k`` of ``K``, so every step removes
  the same fraction of what is left.
* ``agp`` (Zhu & Gupta 2017): ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3`` at
  ``t = t0, t0 + dt, ...`` up to ``t0 + n dt = agp_end_step``, where ``t`` counts optimizer steps.

Example:
    >>> from torchshrink.prune import PruneConfig
    >>> cfg = PruneConfig(ratio=0, layer_ratios={"fc1": 0.9, "fc2": 0.6})
    >>> final_sparsity(cfg), schedule_target(cfg, 1)
    (0.9, 0.9)
    >>> round(scaled_ratio(cfg, 0.6, 0.45), 4)
    0.3
"""

from __future__ import annotations

from torchshrink.prune.config import PruneConfig


def final_sparsity(config: PruneConfig) -> float:
    """The sparsity the schedule rises to.

    ``config.target_sparsity`` when it is positive; with ``ratio=0`` and a ``layer_ratios``
    map, the largest per-layer ratio (so that the map alone prunes, and its largest entry is
    reached exactly at the end of the schedule); else ``0``. ``layer`` granularity ignores the map.

    Example:
        >>> from torchshrink.prune import PruneConfig
        >>> final_sparsity(PruneConfig(ratio=0.8)), final_sparsity(PruneConfig(ratio=0))
        (0.8, 0.0)
    """
    # Whole-block ("layer") pruning has no per-layer ratios.
    if config.target_sparsity > 0 or not config.layer_ratios or config.granularity == "layer":
        return config.target_sparsity
    return max(config.layer_ratios.values())


def schedule_target(config: PruneConfig, t: int) -> float:
    """The sparsity target after schedule step ``t`` (see the module docs).

    Example:
        >>> from torchshrink.prune import PruneConfig
        >>> cfg = PruneConfig(ratio=0.8, schedule="agp", agp_end_step=10, agp_frequency=2)
        >>> round(schedule_target(cfg, 5), 4), schedule_target(cfg, 10)
        (0.7, 0.8)
    """
    s_f = final_sparsity(config)
    if t <= 0:
        return 0.0
    if config.schedule == "oneshot":
        return s_f
    if config.schedule == "iterative":
        return 1.0 - (1.0 - s_f) ** (min(t, config.steps) / config.steps)
    t0, t1 = config.agp_start_step, config.agp_end_step
    assert t1 is not None
    if t < t0:
        return 0.0
    if t >= t1:
        return s_f
    s_i = min(config.initial_sparsity, s_f)
    return s_f + (s_i - s_f) * (1.0 - (t - t0) / (t1 - t0)) ** 3


def is_event(config: PruneConfig, t: int) -> bool:
    """Whether schedule step ``t`` prunes.

    Example:
        >>> from torchshrink.prune import PruneConfig
        >>> cfg = PruneConfig(schedule="iterative", steps=2)
        >>> [is_event(cfg, t) for t in (1, 2, 3)]
        [True, True, False]
    """
    if config.schedule != "agp":
        return (config.schedule == "iterative" and t <= config.steps) or t == 1
    assert config.agp_end_step is not None
    on_grid = (t - config.agp_start_step) % config.agp_frequency == 0
    return config.agp_start_step <= t <= config.agp_end_step and (
        on_grid or t == config.agp_end_step
    )


def scaled_ratio(config: PruneConfig, ratio: float, sparsity: float) -> float:
    """A layer's ratio when the schedule stands at ``sparsity``: ``ratio * sparsity / s_f``.

    The layer reaches its own ``ratio`` when the schedule reaches :func:`final_sparsity`.

    Example:
        >>> from torchshrink.prune import PruneConfig
        >>> round(scaled_ratio(PruneConfig(ratio=0.8), 0.4, 0.4), 4)
        0.2
    """
    s_f = final_sparsity(config)
    return ratio * sparsity / s_f if s_f > 0 else ratio


def default_ratio(config: PruneConfig, sparsity: float) -> float:
    """The ratio of layers that no ``layer_ratios`` entry names: the schedule's target, or 0
    when ``ratio`` is 0 (a per-layer map alone prunes only the layers it names).

    Example:
        >>> from torchshrink.prune import PruneConfig
        >>> default_ratio(PruneConfig(ratio=0.5), 0.25), default_ratio(PruneConfig(ratio=0), 0.3)
        (0.25, 0.0)
    """
    return sparsity if config.target_sparsity > 0 else 0.0
