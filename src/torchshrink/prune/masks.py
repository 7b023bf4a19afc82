"""Element masks: unstructured and N:M sparsity kept through fine-tuning, then baked in.

Masks live in a :class:`MaskState` attached to the model (a plain attribute, not a buffer, so
the ``state_dict`` and the model file are unchanged). Pruned weights are zeroed at once; the
optimizer would move them again (momentum, weight decay), so :class:`MaskHook` re-applies the
masks after every optimizer step of :func:`torchshrink.train`. :func:`bake_masks` makes the
zeros permanent and drops the bookkeeping.

N:M layout: for a ``Linear`` weight ``(out, in)`` the blocks are ``m`` consecutive inputs of a
row; for a conv weight ``(out, in, *k)`` the input channels are made innermost first
(``(out, *k, in)``, as NVIDIA's sparse tensor cores expect), so a block is ``m`` consecutive
input channels at one kernel position.

Example:
    >>> import torch
    >>> w = torch.tensor([[1.0, -3, 2, 0.5, 4, 1, 1, 5]])
    >>> nm_mask(w.abs(), 2, 4).int().tolist()
    [[0, 1, 1, 0, 1, 0, 0, 1]]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from torchshrink.train.hooks import TrainHook, TrainState

_ATTR = "_torchshrink_masks"


@dataclass
class MaskState:
    """Boolean keep-masks by qualified parameter name (``True`` = weight kept).

    Example:
        >>> m = nn.Linear(2, 2)
        >>> s = MaskState({"weight": torch.tensor([[True, False], [True, True]])})
        >>> s.apply(m); float(m.weight[0, 1].detach()), s.sparsity()
        (0.0, 0.25)
    """

    masks: dict[str, torch.Tensor] = field(default_factory=dict)

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero every masked weight of ``model`` (in place)."""
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            p = params[name]
            p.masked_fill_(~mask.to(p.device), 0.0)  # +0.0, not the -0.0 of a multiply

    def sparsity(self) -> float:
        """Fraction of the masked parameters' weights that are pruned."""
        total = sum(m.numel() for m in self.masks.values())
        kept = sum(int(m.sum()) for m in self.masks.values())
        return 1.0 - kept / total if total else 0.0


def get_masks(model: nn.Module) -> MaskState | None:
    """The :class:`MaskState` attached to ``model``, if any.

    Example:
        >>> get_masks(nn.Linear(2, 2)) is None
        True
    """
    state = model.__dict__.get(_ATTR)
    return state if isinstance(state, MaskState) else None


def attach_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> MaskState:
    """Merge ``masks`` into the model's :class:`MaskState` (AND with existing ones) and apply.

    Example:
        >>> m = nn.Linear(4, 1)
        >>> s = attach_masks(m, {"weight": torch.tensor([[True, True, False, False]])})
        >>> int((m.weight == 0).sum()), get_masks(m) is s
        (2, True)
    """
    state = get_masks(model)
    if state is None:
        state = MaskState()
        model.__dict__[_ATTR] = state
    for name, mask in masks.items():
        mask = mask.detach().bool().cpu()
        old = state.masks.get(name)
        state.masks[name] = mask if old is None else (old & mask)
    state.apply(model)
    return state


def bake_masks(model: nn.Module) -> nn.Module:
    """Make masked weights permanent zeros and drop the mask bookkeeping (in place).

    Example:
        >>> m = nn.Linear(4, 1)
        >>> _ = attach_masks(m, {"weight": torch.tensor([[True, False, True, False]])})
        >>> bake_masks(m) is m, get_masks(m), int((m.weight == 0).sum())
        (True, None, 2)
    """
    state = get_masks(model)
    if state is not None:
        state.apply(model)
        del model.__dict__[_ATTR]
    return model


class MaskHook(TrainHook):
    """Re-applies the model's masks at the start of training and after every optimizer step.

    Example:
        >>> hook = MaskHook()
        >>> isinstance(hook, TrainHook)
        True
    """

    def on_train_start(self, state: TrainState) -> None:
        masks = get_masks(state.model)
        if masks is not None:
            masks.apply(state.model)

    def after_step(self, state: TrainState) -> None:
        masks = get_masks(state.model)
        if masks is not None:
            masks.apply(state.model)


def nm_layout(t: torch.Tensor) -> torch.Tensor:
    """View a weight as ``(out, K)`` rows with input channels innermost (see module docs)."""
    if t.dim() > 2:
        t = t.movedim(1, -1)  # (out, *k, in)
    return t.reshape(t.shape[0], -1)


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest-scored weights of every ``m`` consecutive inputs.

    Args:
        scores: importance of each weight, shaped like the weight ``(out, in, *k)``.
        n: weights kept per block.
        m: block length; the number of input channels must be a multiple of ``m``.

    Returns:
        A boolean mask shaped like ``scores``.

    Example:
        >>> nm_mask(torch.arange(8.0).reshape(1, 8), 1, 4).int().tolist()
        [[0, 0, 0, 1, 0, 0, 0, 1]]
    """
    rows = nm_layout(scores)  # (out, K)
    blocks = rows.reshape(rows.shape[0], -1, m)  # (out, K/m, m)
    top = blocks.topk(n, dim=-1).indices  # (out, K/m, n)
    keep = torch.zeros_like(blocks, dtype=torch.bool).scatter_(-1, top, True)
    if scores.dim() > 2:
        shape = (scores.shape[0], *scores.shape[2:], scores.shape[1])  # (out, *k, in)
        return keep.reshape(shape).movedim(-1, 1).contiguous()
    return keep.reshape(scores.shape)


def magnitude_masks(
    scores: Mapping[str, torch.Tensor],
    ratios: Mapping[str, float],
    *,
    global_ratio: float | None = None,
) -> dict[str, torch.Tensor]:
    """Unstructured keep-masks: prune the lowest scores, per layer and/or across layers.

    Layers in ``ratios`` lose ``ratio`` of their weights each; the others (when
    ``global_ratio`` is given) share one threshold that prunes ``global_ratio`` of their
    weights in total. Every layer keeps at least one weight. Scores of ``-inf`` (weights
    already pruned) are always pruned first, so masks only ever grow.

    Example:
        >>> s = {"a": torch.tensor([1.0, 2, 3, 4]), "b": torch.tensor([10.0, 20])}
        >>> {k: v.int().tolist() for k, v in magnitude_masks(s, {}, global_ratio=0.5).items()}
        {'a': [0, 0, 0, 1], 'b': [1, 1]}
    """
    out: dict[str, torch.Tensor] = {}
    for name, r in ratios.items():
        s = scores[name].flatten()
        k = min(round(r * s.numel()), s.numel() - 1)
        keep = torch.ones(s.numel(), dtype=torch.bool)
        keep[torch.argsort(s, stable=True)[:k]] = False
        out[name] = keep.reshape(scores[name].shape)
    rest = [n for n in scores if n not in ratios]
    if global_ratio is not None and rest:
        flat = torch.cat([scores[n].flatten().float() for n in rest])
        keep = torch.ones(flat.numel(), dtype=torch.bool)
        keep[torch.argsort(flat, stable=True)[: round(global_ratio * flat.numel())]] = False
        for name, part in zip(rest, keep.split([scores[n].numel() for n in rest]), strict=True):
            if not part.any():  # never empty a layer: keep its best weight
                part[scores[name].flatten().argmax()] = True
            out[name] = part.reshape(scores[name].shape)
    return out
