"""Sensitivity analysis: how much each layer (or group, or block) tolerates pruning on its own.

For every layer, prune only that layer at each ratio (on a copy, or restoring its weights) and
measure accuracy and loss on a few test batches. The result is a frozen table that reports
render and the auto-search reads (:meth:`SensitivityTable.max_ratio`).

Rows are keyed by: the module name (``unstructured``), the group label (``channel`` / ``head``,
e.g. ``"conv1:out"``) or the block name (``layer``, a single ratio 1.0: the block removed).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torch.utils.data import TensorDataset
    >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> ds = TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
    >>> t = sensitivity(m, ds, example_inputs=torch.zeros(1, 4), ratios=(0.5,))
    >>> t.layers(), len(t.points)
    (['0:out'], 1)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError, EmptyDataError
from torchshrink.core.forward import Inputs, checked_forward, eval_mode
from torchshrink.graph import dependency_groups
from torchshrink.measure.accuracy import evaluate
from torchshrink.prune.allocate import allocate, prunable_weights
from torchshrink.prune.blocks import residual_blocks
from torchshrink.prune.importance import ImportanceContext, get_importance
from torchshrink.prune.masks import magnitude_masks
from torchshrink.prune.structured import remove_groups


@dataclass(frozen=True)
class SensitivityPoint:
    """Accuracy and loss with one layer pruned at one ratio.

    Attributes:
        layer: module name, group label or block name.
        ratio: fraction of that layer removed.
        accuracy: top-1 accuracy on the evaluation batches.
        loss: mean cross-entropy on them.
        params: parameter count of the model with only this layer pruned.
    """

    layer: str
    ratio: float
    accuracy: float
    loss: float
    params: int


@dataclass(frozen=True)
class SensitivityTable:
    """Per-layer accuracy against pruning ratio, with the unpruned baseline.

    Example:
        >>> t = SensitivityTable("channel", "l1", 0.9, 0.3, (
        ...     SensitivityPoint("a", 0.5, 0.89, 0.3, 10), SensitivityPoint("a", 0.7, 0.8, 0.5, 8)))
        >>> t.max_ratio("a", max_drop=0.02), t.curve("a")[1].accuracy
        (0.5, 0.8)
    """

    granularity: str
    method: str
    baseline_accuracy: float
    baseline_loss: float
    points: tuple[SensitivityPoint, ...]

    def layers(self) -> list[str]:
        """Layer names in order of first appearance."""
        return list(dict.fromkeys(p.layer for p in self.points))

    def curve(self, layer: str) -> list[SensitivityPoint]:
        """The points of one layer, by increasing ratio."""
        return sorted((p for p in self.points if p.layer == layer), key=lambda p: p.ratio)

    def max_ratio(self, layer: str, *, max_drop: float) -> float:
        """The largest measured ratio whose accuracy drop from baseline is at most ``max_drop``."""
        ok = [p.ratio for p in self.curve(layer) if self.baseline_accuracy - p.accuracy <= max_drop]
        return max(ok, default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["points"] = [asdict(p) for p in self.points]
        return d


def _eval_batches(data: Any, batch_size: int, max_batches: int | None) -> list[Any]:
    if isinstance(data, DataBundle):
        data = data.test
    if isinstance(data, Dataset):
        data = DataLoader(data, batch_size=batch_size, shuffle=False)
    batches = list(islice(data, max_batches) if max_batches else data)
    if not batches:
        raise EmptyDataError("sensitivity: the evaluation data has no samples")
    return batches


def sensitivity(
    model: nn.Module,
    data: DataBundle | Dataset[Any] | Iterable[Any],
    *,
    example_inputs: Inputs,
    granularity: str = "channel",
    method: str = "l1",
    ratios: Sequence[float] = (0.25, 0.5, 0.75, 0.9),
    max_batches: int | None = 8,
    batch_size: int = 256,
    seed: int = 0,
) -> SensitivityTable:
    """Measure each layer's accuracy against its own pruning ratio (``model`` is not changed).

    Args:
        model: a classifier.
        data: a :class:`DataBundle` (test split), a dataset or ``(x, y)`` batches.
        example_inputs: inputs the model runs on (for tracing groups and blocks).
        granularity: ``"unstructured"``, ``"channel"``, ``"head"`` or ``"layer"``.
        method: importance criterion deciding what goes at each ratio.
        ratios: fractions to try, each in ``[0, 1)``.
        max_batches: evaluation batches (``None``: the whole split).
        batch_size: evaluation batch size when ``data`` is a dataset.
        seed: seed of random importance.

    Raises:
        ConfigError: unknown granularity, a ratio outside ``[0, 1)``, or a data-driven method.

    Example:
        >>> from torchshrink.core.zoo import create_zoo_model
        >>> from torch.utils.data import TensorDataset
        >>> m = create_zoo_model("lenet5")
        >>> ds = TensorDataset(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
        >>> t = sensitivity(m, ds, example_inputs=m.example_inputs(1), ratios=(0.5,))
        >>> t.layers()
        ['conv1:out', 'conv2:out', 'fc1:out']
    """
    if granularity not in ("unstructured", "channel", "head", "layer"):
        raise ConfigError(
            f"granularity: sensitivity supports unstructured, channel, head or layer, got "
            f"'{granularity}'"
        )
    bad = [r for r in ratios if not 0.0 <= r < 1.0]
    if bad:
        raise ConfigError(f"ratios: every ratio must be in [0, 1), got {bad[0]}")
    importance = get_importance(method)
    if importance.needs_data:
        raise ConfigError(f"sensitivity: use a data-free method, not '{method}'")
    with eval_mode(model), torch.no_grad():
        checked_forward(model, example_inputs)
    batches = _eval_batches(data, batch_size, max_batches)
    ctx = ImportanceContext(seed=seed)
    base = evaluate(model, batches)
    points: list[SensitivityPoint] = []

    def point(m: nn.Module, layer: str, ratio: float) -> None:
        r = evaluate(m, batches)
        n = sum(p.numel() for p in m.parameters())
        points.append(SensitivityPoint(layer, ratio, r.accuracy, r.loss, n))

    if granularity == "unstructured":
        weights = prunable_weights(model)
        scores = importance.element_scores(model, dict(weights), ctx)
        for name, w in weights.items():
            saved = w.detach().clone()
            for ratio in ratios:
                mask = magnitude_masks({name: scores[name]}, {name: ratio})[name]
                with torch.no_grad():
                    w.masked_fill_(~mask, 0.0)
                point(model, name.rpartition(".")[0], ratio)
                with torch.no_grad():
                    w.copy_(saved)
    elif granularity == "layer":
        for block in residual_blocks(model, example_inputs):
            m = copy.deepcopy(model)
            parent, _, attr = block.rpartition(".")
            setattr(m.get_submodule(parent) if parent else m, attr, nn.Identity())
            point(m, block, 1.0)
    else:
        unit = "head" if granularity == "head" else "channel"
        groups = [g for g in dependency_groups(model, example_inputs) if g.unit == unit]
        group_scores = importance.group_scores(model, groups, ctx)
        for g, s in zip(groups, group_scores, strict=True):
            for ratio in ratios:
                [keep] = allocate(model, [g], [s], fraction=ratio)
                m = copy.deepcopy(model)
                remove_groups(m, [(g, keep)])
                point(m, g.label, ratio)
    return SensitivityTable(granularity, method, base.accuracy, base.loss, tuple(points))
