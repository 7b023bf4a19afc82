"""Which layers may be pruned and how many channels each group keeps (local or global).

Local allocation removes ``ratio`` of every group. Global allocation ranks all channels of all
groups together by their score divided by the number of weights the channel touches (so a
channel of a wide layer is not kept just because its group sums more weights) and removes the
lowest ``ratio`` of them: layers end up pruned unevenly. Either way, the kept count is rounded
up to a multiple of ``round_to`` (channel groups; heads are not rounded) and never falls below
``min_channels``, so no layer disappears.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchshrink.graph import dependency_groups
    >>> m = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> [g] = dependency_groups(m, torch.zeros(1, 4))
    >>> [len(k) for k in allocate(m, [g], [torch.rand(16)], fraction=0.7, round_to=4)]
    [8]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from torchshrink.core.errors import ConfigError, UnsupportedLayerError
from torchshrink.graph import Group
from torchshrink.prune.config import PruneConfig
from torchshrink.prune.importance import aggregate

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def matches(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` equals one of ``patterns`` or fully matches it as a regex.

    Example:
        >>> matches("layer1.0.conv1", [r"layer1\\..*"]), matches("fc", ["fc1"])
        (True, False)
    """
    for p in patterns:
        try:
            if name == p or re.fullmatch(p, name):
                return True
        except re.error:
            continue
    return False


def prunable_weights(
    model: nn.Module, *, ignore: Iterable[str] = (), nm: bool = False
) -> dict[str, nn.Parameter]:
    """Weights that unstructured (or, with ``nm=True``, N:M) pruning touches, by qualified name.

    Linear, Conv1d/2d/3d weights and ``nn.MultiheadAttention.in_proj_weight`` (plus transposed
    convs when not N:M); biases, norms and embeddings stay dense.

    Example:
        >>> list(prunable_weights(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))))
        ['0.weight']
    """
    ignore = list(ignore)
    out: dict[str, nn.Parameter] = {}
    for name, mod in model.named_modules():
        if name and matches(name, ignore):
            continue
        prefix = f"{name}." if name else ""
        if isinstance(mod, _WEIGHTED) or (not nm and isinstance(mod, _TRANSPOSED)):
            out[prefix + "weight"] = mod.weight  # type: ignore[assignment]
        elif isinstance(mod, nn.MultiheadAttention) and mod.in_proj_weight is not None:
            out[prefix + "in_proj_weight"] = mod.in_proj_weight
    return out


def check_weight_layers(model: nn.Module, config: PruneConfig, *, ignore: Iterable[str]) -> None:
    """Refuse a model with nothing to mask and ``layer_ratios`` keys naming unsupported layers.

    Example:
        >>> check_weight_layers(nn.Linear(2, 2), PruneConfig(), ignore=())
    """
    weights = prunable_weights(model, ignore=ignore)
    if not weights:
        raise UnsupportedLayerError(
            f"no layer of this {type(model).__name__} supports {config.granularity} pruning "
            "(Linear, Conv1d/2d/3d, ConvTranspose, MultiheadAttention are supported)"
        )
    layers = {k.rpartition(".")[0] for k in weights}
    modules = dict(model.named_modules())
    for pattern in config.layer_ratios:
        hits = [n for n in modules if n and matches(n, [pattern])]
        if not hits:
            raise ConfigError(f"layer_ratios: no module matches '{pattern}'")
        if not any(h in layers for h in hits):
            raise UnsupportedLayerError(
                f"layer_ratios: '{hits[0]}' ({type(modules[hits[0]]).__name__}) has no weights "
                f"that {config.granularity} pruning supports (Linear, Conv, attention)"
            )


def weights_per_channel(model: nn.Module, group: Group) -> torch.Tensor:
    """How many parameter elements each channel of ``group`` touches: ``(group.size,)``."""
    named = dict(model.named_parameters())
    keys = {f"{e.module}.{e.param}" if e.module else e.param for e in group.entries}
    return aggregate(group, {k: torch.ones_like(named[k]) for k in keys if k in named})


def allocate(
    model: nn.Module,
    groups: Sequence[Group],
    scores: Sequence[torch.Tensor],
    *,
    fraction: float,
    ratios: Sequence[float | None] | None = None,
    global_: bool = False,
    round_to: int = 1,
    min_channels: int = 1,
) -> list[torch.Tensor]:
    """The sorted channel indices each group keeps.

    Args:
        model: the model the groups come from.
        groups: prunable groups.
        scores: one ``(group.size,)`` score tensor per group (``-inf`` = already pruned).
        fraction: fraction to remove (of each group locally, of all channels globally).
        ratios: per-group override of ``fraction`` (``None`` entries use the default rule).
        global_: one ranking across the groups without an override.
        round_to: kept channel counts round up to a multiple of this (channel groups only).
        min_channels: minimum kept per group.

    Example:
        >>> from torchshrink.graph import dependency_groups
        >>> m = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> [g] = dependency_groups(m, torch.zeros(1, 2))
        >>> allocate(m, [g], [torch.tensor([3.0, 1, 4, 2])], fraction=0.5)[0].tolist()
        [0, 2]
    """
    ratios = list(ratios) if ratios is not None else [None] * len(groups)
    drop = [0] * len(groups)
    pooled = []
    for i, (g, r) in enumerate(zip(groups, ratios, strict=True)):
        if r is None and global_:
            pooled.append(i)
        else:
            drop[i] = round((fraction if r is None else r) * g.size)
    if pooled:
        # Per-element mean score, so that large groups are not favoured by their sum.
        flat = torch.cat(
            [scores[i] / weights_per_channel(model, groups[i]).clamp(min=1) for i in pooled]
        )
        owner = torch.cat([torch.full((groups[i].size,), i) for i in pooled])
        lowest = torch.argsort(flat, stable=True)[: round(fraction * flat.numel())]
        for i in pooled:
            drop[i] = int((owner[lowest] == i).sum())
    keeps = []
    for g, sc, d in zip(groups, scores, drop, strict=True):
        n = g.size - d
        if g.unit == "channel" and round_to > 1:
            n = -(-n // round_to) * round_to
        n = min(g.size, max(n, min_channels))
        keeps.append(torch.sort(torch.argsort(sc, descending=True, stable=True)[:n]).values)
    return keeps


def channel_masks(
    model: nn.Module, groups: Sequence[Group], keeps: Sequence[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Element keep-masks that zero every parameter slice of the channels not in ``keeps``.

    Buffers (BatchNorm statistics) are not masked; they go at physical removal.

    Example:
        >>> from torchshrink.graph import dependency_groups
        >>> m = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> [g] = dependency_groups(m, torch.zeros(1, 2))
        >>> channel_masks(m, [g], [torch.tensor([0, 2])])["2.weight"].tolist()
        [[True, False, True]]
    """
    named = dict(model.named_parameters())
    masks: dict[str, torch.Tensor] = {}
    for g, keep in zip(groups, keeps, strict=True):
        kept = torch.zeros(g.size, dtype=torch.bool)
        kept[keep] = True
        for e in g.entries:
            key = f"{e.module}.{e.param}" if e.module else e.param
            if key not in named:
                continue
            mask = masks.setdefault(key, torch.ones_like(named[key], dtype=torch.bool))
            mask.index_fill_(e.dim, e.index[~kept[e.channel]], False)
    return masks
