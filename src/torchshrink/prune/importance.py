"""Importance criteria: which weights, channels, heads or blocks matter least.

Every criterion scores single weights (:meth:`Importance.element_scores`); the score of a
channel-dependency group is the sum, over **every** parameter slice of the group (the producing
conv, its BatchNorm, the layers reading the channels...), of the scores of its channel's
positions (:func:`aggregate`), so a channel is judged by everything it touches. A block
(``"layer"`` granularity) is scored by the mean score of its weights.

Registered criteria (``@register_importance``):

* ``"l1"`` / ``"magnitude"``: ``|w|``; ``"l2"``: ``w^2`` per weight, ``sqrt(sum w^2)`` per group.
* ``"random"``: seeded uniform scores (a baseline).
* ``"taylor"``: first-order Taylor ``|w * g|`` with ``g`` the loss gradient averaged over a few
  batches (Molchanov et al. 2019).
* ``"bn-scale"``: ``|gamma|`` of the BatchNorm layers in a group (network slimming, Liu et al.
  2017); groups without a BatchNorm fall back to L1 magnitude. Channels and blocks only.
* ``"obd"`` (alias ``"fisher"``): second-order Optimal Brain Damage saliency
  ``0.5 * F_ii * w_i^2`` (LeCun et al. 1990) with the Hessian diagonal approximated by the
  empirical Fisher from mini-batch gradients, ``F_ii = mean_k g_{k,i}^2``. Chosen over a
  reconstruction criterion because it needs no layer-wise solver and works for every
  granularity through the same aggregation.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchshrink.graph import dependency_groups
    >>> m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> with torch.no_grad():
    ...     _ = m[0].weight.copy_(torch.tensor([[1.0, 1], [0, 0], [5, 5]]))
    >>> [g] = dependency_groups(m, torch.zeros(1, 2))
    >>> get_importance("l1").group_scores(m, [g], ImportanceContext())[0].argmax().item()
    2
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.forward import call_model, eval_mode
from torchshrink.core.registry import Registry
from torchshrink.graph import Group
from torchshrink.measure.accuracy import _logits

Batch = tuple[Any, torch.Tensor]


@dataclass(frozen=True)
class ImportanceContext:
    """What a criterion may use besides the weights.

    Attributes:
        batches: ``(x, y)`` batches for data-driven criteria (``x`` as the model takes it).
        seed: seed of random scores.
    """

    batches: tuple[Batch, ...] = ()
    seed: int = 0


def data_context(data: Any, config: Any, *, seed: int) -> ImportanceContext:
    """A context with ``config.importance_batches`` training batches taken from ``data``.

    ``data`` is a :class:`DataBundle` (its train split, shuffled by ``config.seed``), a dataset,
    or an iterable of ``(x, y)`` batches; ``config`` is a :class:`PruneConfig`.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from torchshrink.prune.config import PruneConfig
        >>> ds = TensorDataset(torch.zeros(10, 2), torch.zeros(10, dtype=torch.long))
        >>> len(data_context(ds, PruneConfig(importance_batch_size=4), seed=0).batches)
        3
    """
    from torch.utils.data import DataLoader, Dataset

    from torchshrink.core.databundle import DataBundle

    size = config.importance_batch_size
    if isinstance(data, DataBundle):
        data = data.loader("train", batch_size=size, seed=config.seed)
    elif isinstance(data, Dataset):
        data = DataLoader(data, batch_size=size)
    return ImportanceContext(batches=tuple(islice(data, config.importance_batches)), seed=seed)


class Importance:
    """Base class of importance criteria; subclasses override :meth:`element_scores`.

    Example:
        >>> class Ones(Importance):
        ...     def element_scores(self, model, params, ctx):
        ...         return {k: torch.ones_like(p) for k, p in params.items()}
    """

    needs_data: bool = False

    def element_scores(
        self, model: nn.Module, params: Mapping[str, torch.Tensor], ctx: ImportanceContext
    ) -> dict[str, torch.Tensor]:
        """One non-negative score per weight of each named parameter (same shapes)."""
        raise NotImplementedError

    def group_scores(
        self, model: nn.Module, groups: Sequence[Group], ctx: ImportanceContext
    ) -> list[torch.Tensor]:
        """One score per channel (or head) of each group: a ``(group.size,)`` tensor each."""
        params = _group_params(model, groups)
        scores = self.element_scores(model, params, ctx)
        return [aggregate(g, scores) for g in groups]

    def block_scores(
        self, model: nn.Module, blocks: Sequence[str], ctx: ImportanceContext
    ) -> torch.Tensor:
        """One score per block (qualified module name): the mean score of its weights."""
        named = dict(model.named_parameters())
        params = {k: v for k, v in named.items() if any(_inside(k, b) for b in blocks)}
        scores = self.element_scores(model, params, ctx)
        out = []
        for b in blocks:
            ts = [s.flatten() for k, s in scores.items() if _inside(k, b)]
            out.append(torch.cat(ts).mean() if ts else torch.tensor(0.0))
        return torch.stack(out)  # (num_blocks,)


IMPORTANCE: Registry[type[Importance]] = Registry("importance", ConfigError)


def register_importance(*names: str) -> Callable[[type[Importance]], type[Importance]]:
    """Register an :class:`Importance` subclass under one or more names.

    Example:
        >>> @register_importance("ones-doc")
        ... class Ones(Importance):
        ...     def element_scores(self, model, params, ctx):
        ...         return {k: torch.ones_like(p) for k, p in params.items()}
        >>> "ones-doc" in IMPORTANCE
        True
    """

    def deco(cls: type[Importance]) -> type[Importance]:
        for name in names:
            IMPORTANCE.register(name)(cls)
        return cls

    return deco


def get_importance(name: str) -> Importance:
    """A new instance of the criterion registered as ``name``.

    Raises:
        ConfigError: unknown name; the message lists the valid ones.

    Example:
        >>> type(get_importance("magnitude")).__name__
        'L1Magnitude'
    """
    return IMPORTANCE.get(name)()


def aggregate(group: Group, scores: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum element scores over every slice of ``group``, per channel: a ``(group.size,)`` tensor.

    Entries whose tensor has no score (buffers such as BN running statistics) are skipped.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torchshrink.graph import dependency_groups
        >>> m = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
        >>> [g] = dependency_groups(m, torch.zeros(1, 2))
        >>> s = {k: torch.ones_like(p) for k, p in m.named_parameters()}
        >>> aggregate(g, s).tolist()  # 2 weights + 1 bias + 1 reader weight per channel
        [4.0, 4.0, 4.0]
    """
    out = torch.zeros(group.size, dtype=torch.float64)
    for e in group.entries:
        key = f"{e.module}.{e.param}" if e.module else e.param
        s = scores.get(key)
        if s is None:
            continue
        rows = s.detach().movedim(e.dim, 0)[e.index].reshape(len(e.index), -1)  # (P, rest)
        out.index_add_(0, e.channel, rows.sum(1).double())
    return out.float()


def _inside(param: str, block: str) -> bool:
    return param.startswith(block + ".")


def _group_params(model: nn.Module, groups: Sequence[Group]) -> dict[str, torch.Tensor]:
    named = dict(model.named_parameters())
    keys = {f"{e.module}.{e.param}" if e.module else e.param for g in groups for e in g.entries}
    return {k: named[k] for k in keys if k in named}


def gradients(
    model: nn.Module, batches: Iterable[Batch], *, square: bool = False
) -> dict[str, torch.Tensor]:
    """Mean over batches of the cross-entropy gradient (or of its square) of every parameter.

    The model runs in eval mode (BatchNorm statistics and dropout untouched) and its ``.grad``
    fields are restored, so scoring never changes the model.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(3, 2)
        >>> g = gradients(m, [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))])
        >>> g["weight"].shape
        torch.Size([2, 3])
    """
    named = {k: p for k, p in model.named_parameters() if p.requires_grad}
    saved = {k: p.grad for k, p in named.items()}
    acc = {k: torch.zeros_like(p) for k, p in named.items()}
    n = 0
    try:
        with eval_mode(model), torch.enable_grad():
            for x, y in batches:
                for p in named.values():
                    p.grad = None
                logits = _logits(call_model(model, x))  # (B, num_classes)
                F.cross_entropy(logits.float(), y).backward()
                for k, p in named.items():
                    if p.grad is not None:
                        acc[k] += p.grad.detach() ** 2 if square else p.grad.detach()
                n += 1
    finally:
        for k, p in named.items():
            p.grad = saved[k]
    if n == 0:
        raise ConfigError("data-driven importance got no batches; pass data with samples")
    return {k: v / n for k, v in acc.items()}


@register_importance("l1", "magnitude")
class L1Magnitude(Importance):
    """``|w|`` per weight; per group, the L1 norm of all its slices."""

    def element_scores(
        self, model: nn.Module, params: Mapping[str, torch.Tensor], ctx: ImportanceContext
    ) -> dict[str, torch.Tensor]:
        return {k: p.detach().abs() for k, p in params.items()}


@register_importance("l2")
class L2Magnitude(Importance):
    """``w^2`` per weight; per group, the L2 norm ``sqrt(sum w^2)`` of all its slices."""

    def element_scores(
        self, model: nn.Module, params: Mapping[str, torch.Tensor], ctx: ImportanceContext
    ) -> dict[str, torch.Tensor]:
        return {k: p.detach() ** 2 for k, p in params.items()}

    def group_scores(
        self, model: nn.Module, groups: Sequence[Group], ctx: ImportanceContext
    ) -> list[torch.Tensor]:
        return [s.sqrt() for s in super().group_scores(model, groups, ctx)]


@register_importance("random")
class RandomImportance(Importance):
    """Seeded uniform scores: the baseline every criterion should beat."""

    def element_scores(
        self, model: nn.Module, params: Mapping[str, torch.Tensor], ctx: ImportanceContext
    ) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(ctx.seed)
        return {k: torch.rand(p.shape, generator=gen) for k, p in sorted(params.items())}

    def group_scores(
        self, model: nn.Module, groups: Sequence[Group], ctx: ImportanceContext
    ) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(ctx.seed)
        return [torch.rand(g.size, generator=gen) for g in groups]

    def block_scores(
        self, model: nn.Module, blocks: Sequence[str], ctx: ImportanceContext
    ) -> torch.Tensor:
        return torch.rand(len(blocks), generator=torch.Generator().manual_seed(ctx.seed))


@register_importance("taylor")
class TaylorImportance(Importance):
    """First-order Taylor ``|w * g|`` with the mean loss gradient over ``ctx.batches``."""

    needs_data = True

    def element_scores(
        self, model: nn.Module, params: Mapping[str, torch.Tensor], ctx: ImportanceContext
    ) -> dict[str, torch.Tensor]:
        grads = gradients(model, ctx.batches)
        return {k: (p.detach() * grads[k]).abs() for k, p in params.items() if k in grads}


@register_importance("obd", "fisher")
class OBDImportance(Importance):
    """Optimal Brain Damage ``0.5 * F_ii * w^2`` with the empirical Fisher diagonal."""

    needs_data = True

    def element_scores(
        self, model: nn.Module, params: Mapping[str, torch.Tensor], ctx: ImportanceContext
    ) -> dict[str, torch.Tensor]:
        fisher = gradients(model, ctx.batches, square=True)
        return {k: 0.5 * fisher[k] * p.detach() ** 2 for k, p in params.items() if k in fisher}


_BN = nn.modules.batchnorm._BatchNorm


@register_importance("bn-scale", "bn_scale", "slimming")
class BNScaleImportance(Importance):
    """``|gamma|`` of the group's BatchNorm layers (network slimming); L1 where there is none."""

    def element_scores(
        self, model: nn.Module, params: Mapping[str, torch.Tensor], ctx: ImportanceContext
    ) -> dict[str, torch.Tensor]:
        raise ConfigError(
            "importance 'bn-scale' scores channels (BatchNorm scales), not single weights; use "
            "granularity 'channel' or 'layer', or another method for unstructured / N:M pruning"
        )

    def group_scores(
        self, model: nn.Module, groups: Sequence[Group], ctx: ImportanceContext
    ) -> list[torch.Tensor]:
        out = []
        for g in groups:
            bn: dict[str, torch.Tensor] = {}
            for e in g.entries:
                mod = model.get_submodule(e.module)
                if e.param == "weight" and isinstance(mod, _BN) and mod.weight is not None:
                    bn[f"{e.module}.weight"] = mod.weight.detach().abs()
            if bn:
                out.append(aggregate(g, bn))
            else:
                out.append(L1Magnitude().group_scores(model, [g], ctx)[0])
        return out

    def block_scores(
        self, model: nn.Module, blocks: Sequence[str], ctx: ImportanceContext
    ) -> torch.Tensor:
        out = []
        for b in blocks:
            mods = [m for m in model.get_submodule(b).modules() if isinstance(m, _BN)]
            ws = [m.weight.detach().abs().flatten() for m in mods if m.weight is not None]
            if ws:
                out.append(torch.cat(ws).mean())
            else:
                out.append(L1Magnitude().block_scores(model, [b], ctx)[0])
        return torch.stack(out)
