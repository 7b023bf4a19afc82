"""The search space of ``auto``: per-layer choices bounded by per-layer sensitivity.

Every candidate is a recipe: a per-layer pruning ratio (unstructured for the ``size``
objective, channels removed for ``latency`` / ``energy``, where only a smaller dense model
runs faster), then for ``size`` a k-means codebook width per layer (or float) and a
Huffman-coded model file. Each layer's ratio grid is cut by its sensitivity curve, so no trial
is spent on ratios that alone already wreck the model.

Example:
    >>> space = SearchSpace("unstructured", {"fc1": (0.0, 0.5)}, {"fc1": (0, 4)})
    >>> space.stages({"prune:fc1": 0.5, "bits:fc1": 4}, finetune=None, centroid_finetune=None)[1]
    {'kind': 'cluster', 'bits': {'fc1': 4}, 'finetune': None}
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from torchshrink.auto.config import AutoConfig
from torchshrink.core.databundle import DataBundle
from torchshrink.train.config import TrainConfig

# Layer types that get a codebook (the ones torchshrink.cluster shares).
_CODEBOOK_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass(frozen=True)
class SearchSpace:
    """Per-layer choices of one search.

    Attributes:
        granularity: ``"unstructured"`` or ``"channel"`` (passed to :class:`PruneConfig`).
        ratios: ``{layer_or_group: allowed pruning ratios}`` (each includes 0.0).
        bits: ``{module: allowed codebook bits}``, 0 meaning float; empty when not searched.
        bounds: ``{layer_or_group: largest ratio within the sensitivity slack}`` (for reports).
    """

    granularity: str
    ratios: dict[str, tuple[float, ...]]
    bits: dict[str, tuple[int, ...]] = field(default_factory=dict)
    bounds: dict[str, float] = field(default_factory=dict)

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Draw one candidate's parameters from an optuna trial (names ``prune:L``, ``bits:L``)."""
        params: dict[str, Any] = {}
        for layer, choices in self.ratios.items():
            params[f"prune:{layer}"] = trial.suggest_categorical(f"prune:{layer}", list(choices))
        for layer, choices in self.bits.items():
            params[f"bits:{layer}"] = trial.suggest_categorical(f"bits:{layer}", list(choices))
        return params

    def stages(
        self,
        params: dict[str, Any],
        *,
        finetune: TrainConfig | None,
        centroid_finetune: TrainConfig | None,
        agp: bool = False,
    ) -> list[dict[str, Any]]:
        """The recipe stages (as dicts) that build the candidate ``params`` describes.

        With ``agp`` (and a ``finetune``) unstructured sparsity rises gradually during the
        fine-tune (Zhu & Gupta 2017) instead of being cut at once and then repaired: a very
        sparse candidate then scores close to what it reaches after a long fine-tune.
        """
        # Every layer is named, zeros included: a layer left out would get ``ratio``. The
        # pruner matches a channel group by its producer's name ("conv1" for "conv1:out").
        ratios = {
            re.escape(k[6:].rpartition(":")[0] or k[6:]): float(v)
            for k, v in params.items()
            if k.startswith("prune:")
        }
        bits = {k[5:]: int(v) for k, v in params.items() if k.startswith("bits:") and v > 0}
        stages: list[dict[str, Any]] = []
        top = max(ratios.values(), default=0.0)
        if top > 0:
            prune: dict[str, Any] = {
                "granularity": self.granularity,
                "ratio": top,
                "layer_ratios": ratios,
            }
            gradual = agp and finetune is not None and self.granularity == "unstructured"
            if gradual:
                assert finetune is not None  # for mypy: gradual implies it
                prune.update(schedule="agp", finetune=finetune.model_dump(mode="json"))
            stages.append({"kind": "prune", "config": prune})
            if finetune is not None and not gradual:
                stages.append({"kind": "finetune", "train": finetune.model_dump(mode="json")})
        if bits:
            ft = None if centroid_finetune is None else centroid_finetune.model_dump(mode="json")
            stages.append({"kind": "cluster", "bits": bits, "finetune": ft})
        if self.bits:  # the size objective: price the real coded file
            stages.append({"kind": "export", "format": "huffman"})
        return stages or [{"kind": "finetune", "train": {"epochs": 0, "show_progress": False}}]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (stored in the study, so every worker searches the same space)."""
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        """Inverse of :meth:`to_dict`."""
        return cls(
            granularity=d["granularity"],
            ratios={k: tuple(float(x) for x in v) for k, v in d["ratios"].items()},
            bits={k: tuple(int(x) for x in v) for k, v in d.get("bits", {}).items()},
            bounds={k: float(v) for k, v in d.get("bounds", {}).items()},
        )


def build_space(model: nn.Module, val: DataBundle, config: AutoConfig) -> SearchSpace:
    """Measure per-layer sensitivity on ``val.test`` and cut each layer's ratio grid by it.

    A layer keeps the grid's ratios up to the largest one whose drop, that layer pruned alone
    and not fine-tuned, is at most ``sensitivity_slack * max_accuracy_drop`` (at least 2
    points: fine-tuning recovers much of a one-shot drop).

    Example:
        >>> import torchshrink
        >>> data = torchshrink.load_data("digits", limit=64)
        >>> m = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
        >>> cfg = AutoConfig(model="zoo:lenet300", objective="latency")
        >>> sorted(build_space(m, data, cfg).ratios)
        ['fc1:out', 'fc2:out']
    """
    from torchshrink.prune.sensitivity import sensitivity

    granularity = "unstructured" if config.objective == "size" else "channel"
    grid = tuple(sorted({0.0, *config.ratios}))
    x = val.example_inputs(1)  # (1, *input_shape)
    table = sensitivity(
        model,
        val,
        example_inputs=x,
        granularity=granularity,
        ratios=[r for r in grid if r > 0],
        max_batches=None,
        seed=config.seed,
    )
    slack = max(config.sensitivity_slack * config.max_accuracy_drop, 0.02)
    bounds = {layer: table.max_ratio(layer, max_drop=slack) for layer in table.layers()}
    ratios = {layer: tuple(r for r in grid if r <= b) for layer, b in bounds.items()}
    bits: dict[str, tuple[int, ...]] = {}
    if config.objective == "size":
        bits = {
            name: tuple(sorted(set(config.bits)))
            for name, m in model.named_modules()
            if isinstance(m, _CODEBOOK_TYPES)
        }
    return SearchSpace(granularity, ratios, bits, bounds)
