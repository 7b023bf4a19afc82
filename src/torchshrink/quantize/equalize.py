"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction").

Per-tensor quantization gives every channel of a weight one grid. When one output channel of a
layer spans [-20, 20] and another [-0.1, 0.1], the small one is rounded to a few levels. For two
layers joined by a ReLU (or by nothing), ``relu(x / s) = relu(x) / s`` for ``s > 0``, so output
channel ``i`` of the first layer may be divided by ``s_i`` and input channel ``i`` of the second
multiplied by it without changing the float function. With ``r1_i`` / ``r2_i`` the ranges
(max |w|) of those channels, ``s_i = sqrt(r1_i r2_i) / r2_i`` makes both ranges ``sqrt(r1_i
r2_i)``: the channels of each layer become as even as the pair allows. Chains (conv -> relu ->
depthwise conv -> relu -> conv) are equalized pair by pair, a few sweeps until they settle.

Pairs come from one dynamic trace (:func:`torchshrink.graph.trace`): a Conv2d / Linear whose
output feeds (through at most one ReLU / LeakyReLU) exactly one other Conv2d / Linear and
nothing else. An output that also feeds a residual sum or a second branch is left alone, as is a
ReLU6 (clipping at 6 does not commute with scaling). Fold BatchNorm first (done here), so a
``conv -> bn -> relu -> conv`` chain is a pair.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> x = torch.randn(3, 4)
    >>> eq = equalize_cross_layer(net, x)
    >>> bool(torch.allclose(eq(x), net(x), atol=1e-5))
    True
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.forward import Inputs
from torchshrink.graph import trace
from torchshrink.quantize.fold import fold_bn

_LAYERS = (nn.Conv2d, nn.Linear)
# Positively homogeneous activations: f(x / s) = f(x) / s for every s > 0.
_HOMOGENEOUS = {"relu", "relu_", "leaky_relu", "leaky_relu_"}


def equalize_cross_layer(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    iterations: int = 20,
    tolerance: float = 1e-4,
) -> nn.Module:
    """Return a BN-folded, equalized copy of ``model`` (same float outputs); ``model`` is kept.

    Args:
        model: a float model.
        example_inputs: inputs to trace the model with (tensor, tuple or keyword dict).
        iterations: at most this many sweeps over all pairs.
        tolerance: stop when no scale of a sweep differs from 1 by more than this.

    Returns:
        The equalized copy, in eval mode.

    Raises:
        ConfigError: ``iterations`` is below 1.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
        >>> find_equalization_pairs(net, torch.zeros(1, 1, 5, 5))
        [('0', '2')]
    """
    if iterations < 1:
        raise ConfigError(f"equalize_cross_layer: iterations must be >= 1, got {iterations}")
    out = fold_bn(model)  # a copy, in eval mode
    pairs = find_equalization_pairs(out, example_inputs)
    for _ in range(iterations):
        worst = 0.0
        for first, second in pairs:
            s = equalize_pair(out.get_submodule(first), out.get_submodule(second))
            worst = max(worst, float((s - 1).abs().max()) if s.numel() else 0.0)
        if worst <= tolerance:
            break
    return out


def find_equalization_pairs(model: nn.Module, example_inputs: Inputs) -> list[tuple[str, str]]:
    """``(first, second)`` names of the Conv2d / Linear pairs that can be equalized, in order.

    See the module docstring for which pairs qualify.
    """
    graph = trace(model, example_inputs)
    modules = dict(model.named_modules())

    def layer(node_target: str) -> nn.Module | None:
        m = modules.get(node_target)
        return m if type(m) in _LAYERS else None

    pairs: list[tuple[str, str]] = []
    for node in graph.module_nodes():
        first = layer(node.target)
        if first is None or len(node.outputs) != 1:
            continue
        value = node.outputs[0]
        users = graph.users(value)
        if len(users) == 1 and users[0].kind == "function" and users[0].target in _HOMOGENEOUS:
            if value in graph.outputs:
                continue
            value = users[0].outputs[0]  # through the activation
            users = graph.users(value)
        # exactly one reader, and not a model output: nothing else sees the rescaled channels
        if len(users) != 1 or users[0].kind != "module" or value in graph.outputs:
            continue
        second = layer(users[0].target)
        # Conv -> Linear reads another axis than the channels (a Linear acts on the last dim)
        if type(second) is not type(first) or not _channels_match(first, second):
            continue
        pairs.append((node.target, users[0].target))
    return pairs


@torch.no_grad()
def equalize_pair(first: nn.Module, second: nn.Module) -> torch.Tensor:
    """Rescale one pair in place (see the module docstring) and return the scales ``(C,)``.

    Example:
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = a.weight.copy_(torch.tensor([[4.0, 0.0], [0.0, 1.0]]))
        ...     _ = b.weight.copy_(torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
        >>> equalize_pair(a, b).tolist()
        [2.0, 1.0]
    """
    w1 = cast(torch.Tensor, first.weight)  # (C, ...)
    w2 = cast(torch.Tensor, second.weight)  # (C2, C / groups, ...)
    r1 = w1.detach().abs().reshape(w1.shape[0], -1).amax(dim=1)  # (C,)
    idx = _input_index(second)  # (C2, C / groups): input channel of each weight slice
    slice_max = w2.detach().abs().reshape(*idx.shape, -1).amax(dim=2)  # (C2, C / groups)
    r2 = torch.zeros_like(r1).scatter_reduce(0, idx.reshape(-1), slice_max.reshape(-1), "amax")
    s = torch.sqrt(r1 * r2) / r2  # (C,)
    # A dead channel (all-zero weights on either side) has no range to balance.
    s = torch.where((r1 > 0) & (r2 > 0) & torch.isfinite(s), s, torch.ones_like(s))
    w1.div_(s.reshape(-1, *([1] * (w1.dim() - 1))))
    bias = cast(torch.Tensor | None, first.bias)
    if bias is not None:
        bias.div_(s)
    s2 = s[idx]  # (C2, C / groups)
    w2.mul_(s2.reshape(*s2.shape, *([1] * (w2.dim() - 2))))
    return s


def _input_index(layer: nn.Module) -> torch.Tensor:
    # Which input channel each (output channel, input slot) slice of the weight reads: for a
    # grouped conv, slot j of output o in group g reads channel g * (C / groups) + j.
    w = cast(torch.Tensor, layer.weight)
    groups = layer.groups if isinstance(layer, nn.Conv2d) else 1
    c_out, per_group = w.shape[0], w.shape[1]
    group_of = torch.arange(c_out) // (c_out // groups)  # (C2,)
    return group_of[:, None] * per_group + torch.arange(per_group)[None, :]  # (C2, C / groups)


def _channels_match(first: nn.Module, second: nn.Module) -> bool:
    c = cast(torch.Tensor, first.weight).shape[0]
    w2 = cast(torch.Tensor, second.weight)
    groups = second.groups if isinstance(second, nn.Conv2d) else 1
    return w2.shape[1] * groups == c


def weight_channel_ranges(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output-channel ranges (C_out,), input-channel ranges (C_in,))`` of max |w|.

    Example:
        >>> out_r, in_r = weight_channel_ranges(nn.Linear(3, 2))
        >>> out_r.shape, in_r.shape
        (torch.Size([2]), torch.Size([3]))
    """
    w = cast(torch.Tensor, module.weight).detach().abs()
    out_r = w.reshape(w.shape[0], -1).amax(dim=1)  # (C_out,)
    idx = _input_index(module)  # (C_out, C_in / groups)
    slice_max = w.reshape(*idx.shape, -1).amax(dim=2)
    n_in = int(idx.max()) + 1
    in_r = torch.zeros(n_in).scatter_reduce(0, idx.reshape(-1), slice_max.reshape(-1), "amax")
    return out_r, in_r
