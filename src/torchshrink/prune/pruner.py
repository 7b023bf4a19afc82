"""The pruning driver: :class:`Pruner` for your own loop, :func:`prune` for the one-call path.

Schedules (``oneshot``, ``iterative``, ``agp``) are defined in :mod:`torchshrink.prune.schedules`;
:func:`prune` fine-tunes after each iterative step and runs AGP inside fine-tuning through a
:class:`~torchshrink.train.TrainHook`. A ``layer_ratios`` map with ``ratio=0`` prunes only the
layers it names, each to its own ratio.

Granularities: ``unstructured`` and ``nm`` zero weights through masks (kept during fine-tuning,
baked in by :meth:`Pruner.finish`). ``channel`` and ``head`` physically remove channels / heads
with :func:`~torchshrink.prune.remove_groups`; one-shot and iterative steps remove at once
(rebuild your optimizer afterwards), ``agp`` masks whole channels during training (the optimizer
stays valid) and removes them in :meth:`Pruner.finish`. ``layer`` replaces whole residual
blocks by ``nn.Identity`` (see :func:`residual_blocks` for the rule).

Example:
    >>> import torch
    >>> from torchshrink.core.zoo import create_zoo_model
    >>> m = create_zoo_model("lenet5")
    >>> cfg = PruneConfig(granularity="channel", ratio=0.5)
    >>> r = prune(m, cfg, example_inputs=m.example_inputs(1))
    >>> m.conv1.out_channels, m.fc1.out_features
    (10, 250)
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError, UnsupportedLayerError
from torchshrink.core.forward import Inputs, checked_forward, eval_mode
from torchshrink.graph import Group, dependency_groups
from torchshrink.measure.params import param_stats
from torchshrink.prune.allocate import (
    allocate,
    channel_masks,
    check_weight_layers,
    matches,
    prunable_weights,
)
from torchshrink.prune.blocks import residual_blocks
from torchshrink.prune.config import PruneConfig
from torchshrink.prune.importance import ImportanceContext, data_context, get_importance
from torchshrink.prune.masks import (
    MaskHook,
    attach_masks,
    bake_masks,
    get_masks,
    magnitude_masks,
    nm_layout,
    nm_mask,
)
from torchshrink.prune.schedules import (
    default_ratio,
    final_sparsity,
    is_event,
    scaled_ratio,
    schedule_target,
)
from torchshrink.prune.structured import remove_groups
from torchshrink.train.distributed import sync_from_main
from torchshrink.train.hooks import LossTerm, TrainState


@dataclass(frozen=True)
class StepRecord:
    """One pruning event: its schedule step, the target and what was reached.

    ``achieved`` is the masked fraction of the pruned weights (unstructured / N:M), the fraction
    of channels or heads removed (structured) or of residual blocks removed (layer).
    """

    step: int
    target: float
    achieved: float
    params: int
    nonzero: int


class Pruner:
    """Stateful pruning driver for a user's own training loop (the model changes in place).

    Call :meth:`step` once per schedule step (one-shot: once; iterative: once per round; AGP:
    after every optimizer step), :meth:`apply_masks` after every optimizer step (or pass
    :meth:`hook` to :func:`torchshrink.train`), and :meth:`finish` at the end.

    Args:
        model: the model to prune (changed in place).
        config: what and how to prune.
        example_inputs: inputs the model runs on (tensor, tuple or dict).
        data: a :class:`DataBundle`, a dataset or an iterable of ``(x, y)`` batches, for
            data-driven importance (``taylor``, ``obd``).

    Raises:
        ShapeError: the model does not run on ``example_inputs``.
        ConfigError: the method needs data and none was given, or AGP has no end step.
        UnsupportedLayerError: nothing in the model can be pruned at this granularity, or a
            ``layer_ratios`` key names a layer of an unsupported type.

    Example:
        >>> import torch
        >>> m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> p = Pruner(m, PruneConfig(ratio=0.5), example_inputs=torch.zeros(1, 8))
        >>> p.step()
        0.5
        >>> int((p.finish()[0].weight == 0).sum())
        32
    """

    def __init__(
        self,
        model: nn.Module,
        config: PruneConfig,
        *,
        example_inputs: Inputs,
        data: DataBundle | Dataset[Any] | Iterable[Any] | None = None,
    ) -> None:
        self.model, self.config, self.example_inputs, self.data = (
            model,
            config,
            example_inputs,
            data,
        )
        with eval_mode(model), torch.no_grad():
            checked_forward(model, example_inputs)  # a bad input fails here, naming the layer
        self.importance = get_importance(config.method)
        if self.importance.needs_data and data is None:
            raise ConfigError(
                f"method '{config.method}' scores weights from gradients and needs data; pass "
                "data= (a DataBundle or (x, y) batches)"
            )
        if config.schedule == "agp" and config.agp_end_step is None:
            raise ConfigError(
                "agp_end_step: set the optimizer step where AGP reaches the ratio when driving "
                "Pruner yourself (prune() derives it from the fine-tuning length)"
            )
        self.t = 0
        self.history: list[StepRecord] = []
        self.changes: dict[str, list[int]] = {}
        self.notes: list[str] = []
        self.done = 0.0  # sparsity target reached so far
        self.final = final_sparsity(config)  # what the schedule rises to
        self._params0 = param_stats(model).params
        self._ignore = [n for n, _ in model.named_modules() if n and matches(n, config.ignore)]
        self._groups: list[Group] | None = None  # fixed groups while channels are only masked
        self._keeps: dict[int, torch.Tensor] = {}
        self._blocks0: int | None = None
        self._blocks_removed = 0
        if not config.structured:
            check_weight_layers(model, config, ignore=self._ignore)

    # -- schedule ------------------------------------------------------------------------
    def target(self, t: int) -> float:
        """The sparsity target after schedule step ``t`` (see :mod:`~torchshrink.prune.schedules`).

        Example:
            >>> cfg = PruneConfig(ratio=0.8, schedule="agp", agp_end_step=10, agp_frequency=2)
            >>> p = Pruner(nn.Linear(4, 4), cfg, example_inputs=torch.zeros(1, 4))
            >>> round(p.target(5), 4), p.target(10)
            (0.7, 0.8)
        """
        return schedule_target(self.config, t)

    def step(self) -> float:
        """Advance the schedule by one step; prune when it is a pruning event.

        Returns:
            The sparsity target now in force.
        """
        self.t += 1
        if is_event(self.config, self.t):
            target = self.target(self.t)
            if target > self.done or (self.config.granularity == "nm" and self.done == 0):
                self.prune_to(target)
        self.apply_masks()
        return self.done

    def prune_to(self, sparsity: float) -> None:
        """Prune now so that ``sparsity`` (a fraction of the original) is removed."""
        g = self.config.granularity
        if g in ("unstructured", "nm"):
            achieved = self._prune_weights(sparsity)
        elif g == "layer":
            achieved = self._prune_blocks(sparsity)
        else:
            achieved = self._prune_groups(sparsity)
        # N:M reaches its fixed pattern at once, whatever the schedule asked for.
        self.done = self.final if g == "nm" else sparsity
        stats = param_stats(self.model)
        self.history.append(
            StepRecord(self.t, sparsity, achieved, stats.params, stats.nonzero_params)
        )

    def apply_masks(self) -> None:
        """Re-apply the masks (call after every optimizer step of your own loop)."""
        masks = get_masks(self.model)
        if masks is not None:
            masks.apply(self.model)

    def hook(self) -> MaskHook:
        """A training hook: masks after every optimizer step, AGP steps when scheduled.

        Example:
            >>> p = Pruner(nn.Linear(4, 4), PruneConfig(), example_inputs=torch.zeros(1, 4))
            >>> type(p.hook()).__name__
            '_PrunerHook'
        """
        return _PrunerHook(self)

    def finish(self) -> nn.Module:
        """Bake masks in, or physically remove channels that were only masked; return the model."""
        if self._groups is not None:
            bake_masks(self.model)
            plan = [(g, k) for g in self._groups if len(k := self._keeps[g.id]) < g.size]
            remove_groups(self.model, plan)
            self._groups = None
        bake_masks(self.model)
        return self.model

    # -- helpers -------------------------------------------------------------------------
    def _context(self) -> ImportanceContext:
        if not self.importance.needs_data:
            return ImportanceContext(seed=self.config.seed + self.t)
        return data_context(self.data, self.config, seed=self.config.seed + self.t)

    def _layer_ratio(self, names: Sequence[str], sparsity: float) -> float | None:
        # Per-layer ratios follow the schedule in proportion to its final sparsity.
        for pattern, r in self.config.layer_ratios.items():
            if any(matches(n, [pattern]) for n in names):
                return scaled_ratio(self.config, r, sparsity)
        return None

    def _prune_weights(self, sparsity: float) -> float:
        c = self.config
        weights = prunable_weights(self.model, ignore=self._ignore, nm=c.granularity == "nm")
        scores = self.importance.element_scores(self.model, dict(weights), self._context())
        old = get_masks(self.model)
        for k, s in scores.items():  # already-pruned weights stay pruned
            if old is not None and k in old.masks:
                scores[k] = s.masked_fill(~old.masks[k], float("-inf"))
        if c.granularity == "nm":
            masks = {}
            for k, s in scores.items():
                if nm_layout(s).shape[1] % c.m or s.shape[1 if s.dim() > 2 else -1] % c.m:
                    self.notes.append(f"{k}: input size not a multiple of m={c.m}; left dense")
                    continue
                masks[k] = nm_mask(s, c.n, c.m)
        else:
            ratios, default = {}, default_ratio(c, sparsity)
            for k in scores:
                r = self._layer_ratio([k.rpartition(".")[0]], sparsity)
                if r is not None or not c.global_:
                    ratios[k] = default if r is None else r
            masks = magnitude_masks(scores, ratios, global_ratio=default if c.global_ else None)
        masks = sync_from_main(masks)  # under torchrun every rank keeps rank 0's masks
        return attach_masks(self.model, masks).sparsity()

    def _prunable_groups(self) -> list[Group]:
        unit = "head" if self.config.granularity == "head" else "channel"
        groups = dependency_groups(self.model, self.example_inputs, ignore=self._ignore)
        groups = [g for g in groups if g.unit == unit]
        if not groups:
            raise UnsupportedLayerError(
                f"no prunable {unit} group in this {type(self.model).__name__}: every {unit} "
                "space is blocked (model outputs, ignored layers) or absent"
            )
        return groups

    def _prune_groups(self, sparsity: float) -> float:
        masked = self.config.schedule == "agp"
        if masked:
            if self._groups is None:
                self._groups = self._prunable_groups()
                self._keeps = {g.id: torch.arange(g.size) for g in self._groups}
            groups, fraction = self._groups, default_ratio(self.config, sparsity)
        else:
            groups = self._prunable_groups()
            done = default_ratio(self.config, self.done)
            fraction = 1.0 - (1.0 - default_ratio(self.config, sparsity)) / (1.0 - done)
        scores = self.importance.group_scores(self.model, groups, self._context())
        if masked:
            for g, s in zip(groups, scores, strict=True):
                dead = torch.ones(g.size, dtype=torch.bool)
                dead[self._keeps[g.id]] = False
                s.masked_fill_(dead, float("-inf"))
        keeps = sync_from_main(self._allocate(groups, scores, fraction, sparsity))  # rank 0's
        for g, k in zip(groups, keeps, strict=True):
            self.changes.setdefault(g.label, [g.size, g.size])[1] = len(k)
        if masked:
            self._keeps.update({g.id: k for g, k in zip(groups, keeps, strict=True)})
            attach_masks(self.model, channel_masks(self.model, groups, keeps))
        else:
            remove_groups(self.model, [(g, k) for g, k in zip(groups, keeps, strict=True)])
        total = sum(b for b, _ in self.changes.values())
        return 1.0 - sum(a for _, a in self.changes.values()) / total

    def _allocate(
        self, groups: Sequence[Group], scores: Sequence[torch.Tensor], fraction: float, s: float
    ) -> list[torch.Tensor]:
        c = self.config
        ratios = []
        for g in groups:
            producers = [e.module for e in g.entries if e.role == "out"]
            r = self._layer_ratio([g.label.rpartition(":")[0], *producers], s)
            if r is not None and c.schedule != "agp":  # physical steps: of what is left
                r_done = self._layer_ratio([g.label.rpartition(":")[0], *producers], self.done)
                r = 1.0 - (1.0 - r) / (1.0 - (r_done or 0.0))
            ratios.append(r)
        return allocate(
            self.model,
            groups,
            scores,
            fraction=fraction,
            ratios=ratios,
            global_=c.global_,
            round_to=c.round_to,
            min_channels=c.min_channels,
        )

    def _prune_blocks(self, sparsity: float) -> float:
        blocks = [
            b for b in residual_blocks(self.model, self.example_inputs) if b not in self._ignore
        ]
        if self._blocks0 is None:
            self._blocks0 = len(blocks)
        if not blocks:
            raise UnsupportedLayerError(
                f"no removable residual block (output = x + f(x)) in this "
                f"{type(self.model).__name__}; 'layer' pruning needs one"
            )
        count = math.floor(sparsity * self._blocks0 + 1e-9) - self._blocks_removed
        count = min(count, len(blocks) - 1)
        if count > 0:
            scores = self.importance.block_scores(self.model, blocks, self._context())
            scores = sync_from_main(scores)  # under torchrun every rank removes rank 0's choice
            for i in torch.argsort(scores, stable=True)[:count].tolist():
                parent, _, attr = blocks[i].rpartition(".")
                setattr(
                    self.model.get_submodule(parent) if parent else self.model, attr, nn.Identity()
                )
                self.changes[blocks[i]] = [1, 0]
            self._blocks_removed += count
        return self._blocks_removed / self._blocks0


class _PrunerHook(MaskHook):
    def __init__(self, pruner: Pruner) -> None:
        self.pruner = pruner

    def after_step(self, state: TrainState) -> None:
        if self.pruner.config.schedule == "agp":
            self.pruner.step()
        super().after_step(state)


@dataclass(frozen=True)
class PruneResult:
    """What :func:`prune` did.

    Attributes:
        model: the pruned model (the same object that was passed in).
        config: the configuration used (AGP end step filled in).
        params_before / params_after: parameter counts.
        nonzero_before / nonzero_after: non-zero parameter counts.
        steps: every pruning event.
        changes: structured sizes ``{group label or block: [before, after]}``.
        accuracy: test accuracy after the last fine-tuning, ``None`` without fine-tuning.
        seconds: wall time.
        notes: layers left alone and why.
    """

    model: nn.Module
    config: PruneConfig
    params_before: int
    params_after: int
    nonzero_before: int
    nonzero_after: int
    steps: tuple[StepRecord, ...]
    changes: dict[str, list[int]] = field(default_factory=dict)
    accuracy: float | None = None
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def sparsity(self) -> float:
        """Fraction of the original parameters that are gone or zero."""
        return 1.0 - self.nonzero_after / self.params_before if self.params_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, JSON-ready."""
        d = {k: v for k, v in asdict(self).items() if k not in ("model", "config", "steps")}
        d["config"] = self.config.model_dump(mode="json", by_alias=True)
        d["steps"] = [asdict(s) for s in self.steps]
        d["sparsity"] = self.sparsity
        return d


def prune(
    model: nn.Module,
    config: PruneConfig,
    *,
    example_inputs: Inputs,
    data: DataBundle | Dataset[Any] | Iterable[Any] | None = None,
    loss_terms: Sequence[LossTerm] = (),
) -> PruneResult:
    """Prune ``model`` **in place** following ``config`` (with fine-tuning when configured).

    One-shot: prune, then fine-tune once. Iterative: ``steps`` rounds of prune + fine-tune.
    AGP: fine-tune while pruning gradually. Masks are baked in and masked channels removed at
    the end, so the result is a plain (smaller or sparse) model that saves and loads.
    ``loss_terms`` (e.g. distillation from the dense model,
    :func:`torchshrink.distill.distill_loss_terms`) are added to every fine-tuning run.

    Raises:
        ConfigError: fine-tuning without a :class:`DataBundle`, AGP without fine-tuning, ...
        ShapeError, UnsupportedLayerError: see :class:`Pruner`.

    Example:
        >>> import torch
        >>> m = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> r = prune(m, PruneConfig(ratio=0.75, global_=True), example_inputs=torch.zeros(1, 16))
        >>> round(r.sparsity, 2) > 0.5, r.params_after == r.params_before
        (True, True)
    """
    from torchshrink.train.loop import train

    t_start = time.perf_counter()
    ft = config.finetune
    if ft is not None and not isinstance(data, DataBundle):
        raise ConfigError(
            "finetune: fine-tuning needs data as a DataBundle (torchshrink.load_data)"
        )
    if config.schedule == "agp":
        if ft is None or not isinstance(data, DataBundle):
            raise ConfigError("schedule 'agp' prunes during fine-tuning: set finetune= and data=")
        if config.agp_end_step is None:
            total = len(data.loader("train", batch_size=ft.batch_size)) * ft.epochs
            end = max(config.agp_start_step + 1, int(0.75 * total))
            config = config.model_copy(update={"agp_end_step": end})
    before = param_stats(model)
    pruner = Pruner(model, config, example_inputs=example_inputs, data=data)
    accuracy = None
    rounds = (
        0 if config.schedule == "agp" else config.steps if config.schedule == "iterative" else 1
    )
    for _ in range(rounds):
        pruner.step()
        if ft is not None:
            assert isinstance(data, DataBundle)
            accuracy = train(
                model, data, ft, hooks=[pruner.hook()], loss_terms=loss_terms
            ).final_accuracy
    if config.schedule == "agp":
        assert ft is not None and isinstance(data, DataBundle)
        accuracy = train(
            model, data, ft, hooks=[pruner.hook()], loss_terms=loss_terms
        ).final_accuracy
        if pruner.done < pruner.final:  # training stopped before the end step
            pruner.prune_to(pruner.final)
    pruner.finish()
    after = param_stats(model)
    return PruneResult(
        model=model,
        config=config,
        params_before=before.params,
        params_after=after.params,
        nonzero_before=before.nonzero_params,
        nonzero_after=after.nonzero_params,
        steps=tuple(pruner.history),
        changes=pruner.changes,
        accuracy=accuracy,
        seconds=time.perf_counter() - t_start,
        notes=tuple(dict.fromkeys(pruner.notes)),
    )
