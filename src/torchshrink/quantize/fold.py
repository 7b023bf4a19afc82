"""Fold inference-mode BatchNorm into the Conv / Linear layer that feeds it.

``bn(conv(x)) = gamma * (W x + b - mean) / sqrt(var + eps) + beta`` is again a convolution with
``W' = W * gamma / sqrt(var + eps)`` (per output channel) and
``b' = (b - mean) * gamma / sqrt(var + eps) + beta``. Quantizing the folded weight is what an
int8 runtime executes, so PTQ folds first. The result equals the original model in eval mode
(BatchNorm uses its running statistics); training-mode batch statistics are not folded.

Pairs are found with ``torch.fx``: a BatchNorm whose input is the output of a Conv / Linear that
has no other user. Models that ``torch.fx`` cannot trace fall back to adjacent pairs inside
``nn.Sequential`` containers.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    >>> folded = fold_bn(net)
    >>> type(folded[1]).__name__
    'Identity'
    >>> x = torch.randn(2, 1, 8, 8)
    >>> bool(torch.allclose(folded(x), net(x), atol=1e-5))
    True
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
from torch import nn

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Which BatchNorm may follow which layer (the BN channel axis must be the layer's output axis).
_FOLDABLE: dict[type[nn.Module], tuple[type[nn.Module], ...]] = {
    nn.Conv1d: (nn.BatchNorm1d,),
    nn.Conv2d: (nn.BatchNorm2d,),
    nn.Conv3d: (nn.BatchNorm3d,),
    nn.Linear: (nn.BatchNorm1d,),
}


def fold_bn(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Fold every foldable BatchNorm into its producer; the BatchNorm becomes ``nn.Identity``.

    Args:
        model: any module; it is put in eval mode.
        inplace: change ``model`` itself instead of a deep copy.

    Returns:
        The folded model (``model`` itself when ``inplace``, else a new copy), in eval mode.

    Example:
        >>> from torchshrink.core.zoo import create_zoo_model
        >>> m = fold_bn(create_zoo_model("resnet20"))
        >>> sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())
        0
    """
    out = model if inplace else copy.deepcopy(model)
    out.eval()
    for layer_name, bn_name in find_bn_pairs(out):
        layer: Any = out.get_submodule(layer_name)
        bn = out.get_submodule(bn_name)
        weight, bias = fold_bn_weights(layer, bn)  # type: ignore[arg-type]
        with torch.no_grad():
            layer.weight.copy_(weight)
            if layer.bias is None:
                layer.bias = nn.Parameter(bias)
            else:
                layer.bias.copy_(bias)
        _set_submodule(out, bn_name, nn.Identity())
    return out


def fold_bn_weights(
    layer: nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``layer`` with the eval-mode ``bn`` that follows it folded in.

    A pure function: neither module changes. Computed in float64, returned in the weight dtype.

    Example:
        >>> conv, bn = nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3).eval()
        >>> w, b = fold_bn_weights(conv, bn)
        >>> w.shape, b.shape
        (torch.Size([3, 2, 1, 1]), torch.Size([3]))
    """
    w = layer.weight.detach().double()  # (C_out, C_in/g, *k) or (C_out, C_in)
    c_out = w.shape[0]
    b = layer.bias.detach().double() if layer.bias is not None else torch.zeros(c_out).double()
    mean = _stat(bn.running_mean, c_out, 0.0)
    var = _stat(bn.running_var, c_out, 1.0)
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones(c_out).double()
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros(c_out).double()
    factor = gamma / torch.sqrt(var + bn.eps)  # (C_out,)
    w_folded = w * factor.reshape(-1, *([1] * (w.dim() - 1)))
    b_folded = (b - mean) * factor + beta
    return w_folded.to(layer.weight.dtype), b_folded.to(layer.weight.dtype)


def _stat(t: torch.Tensor | None, n: int, default: float) -> torch.Tensor:
    # BatchNorm with track_running_stats=False has no running stats; eval mode then
    # normalises with batch statistics, which cannot be folded. Treat as identity stats.
    return torch.full((n,), default).double() if t is None else t.detach().double()


def find_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(layer_name, bn_name)`` of every BatchNorm that can be folded into its producer.

    Example:
        >>> find_bn_pairs(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
        [('0', '1')]
    """
    try:
        pairs = _fx_pairs(model)
    except Exception:
        pairs = _sequential_pairs(model)
    modules = dict(model.named_modules())
    return [
        (a, b)
        for a, b in pairs
        if isinstance(modules[b], _FOLDABLE.get(type(modules[a]), ()))
        and modules[b].track_running_stats  # type: ignore[union-attr]
        and modules[b].num_features == modules[a].weight.shape[0]  # type: ignore[union-attr]
    ]


def _fx_pairs(model: nn.Module) -> list[tuple[str, str]]:
    import torch.fx

    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BN):
            continue
        src = node.args[0] if node.args else None
        if (
            isinstance(src, torch.fx.Node)
            and src.op == "call_module"
            and type(modules.get(src.target)) in _FOLDABLE
            and len(src.users) == 1  # the raw conv output must not be used elsewhere
        ):
            pairs.append((str(src.target), str(node.target)))
    # A layer called twice (weight sharing) cannot be folded for one of its call sites only.
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    return [(a, b) for a, b in pairs if calls[a] == 1 and calls[b] == 1]


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential):
            continue
        children = list(mod.named_children())
        for (n1, m1), (n2, m2) in itertools.pairwise(children):
            if type(m1) in _FOLDABLE and isinstance(m2, _BN):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + n1, prefix + n2))
    return pairs


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
