"""Physical removal of channels / neurons / heads: the model becomes a smaller dense model.

Given a :class:`~torchshrink.graph.Group` and the channels to *keep*, every parameter and buffer
slice of the group is cut out (``index_select`` along the group's dimension), then each layer
whose weights changed gets its attributes fixed by its op handler (``out_features``,
``in_channels``, ``groups`` of a depthwise conv, ``num_features``, ``normalized_shape``,
``num_heads``...). Which channels to keep is an input: importance criteria decide it elsewhere.

Group entries hold positions in the model *as traced*. Remove several groups of one trace in a
single :func:`remove_groups` call; after any removal, build the groups again before the next one
(a stale group is detected and refused).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchshrink.graph import dependency_groups
    >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> [g] = dependency_groups(m, torch.zeros(1, 4))
    >>> remove_channels(m, g, [0, 3, 5])[0].out_features, m[2].in_features
    (3, 3)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.graph import Group, get_op_handler

Keep = Sequence[int] | torch.Tensor


def remove_channels(model: nn.Module, group: Group, keep: Keep) -> nn.Module:
    """Remove, in place, every channel of ``group`` not listed in ``keep``.

    Args:
        model: the model the group was built from (changed in place and returned).
        group: a prunable group from :func:`torchshrink.graph.dependency_groups`.
        keep: indices in ``[0, group.size)`` of the channels (or heads) to keep; order and
            duplicates do not matter, at least one is needed.

    Returns:
        ``model``, now with smaller weight tensors.

    Raises:
        ConfigError: the group is blocked, ``keep`` is empty or out of range, or the group is
            stale (the model changed since the group was built).

    Example:
        >>> import torch
        >>> from torchshrink.core.zoo import create_zoo_model
        >>> from torchshrink.graph import dependency_groups
        >>> m = create_zoo_model("lenet5")
        >>> g = dependency_groups(m, m.example_inputs(1))[1]  # conv2 filters
        >>> remove_channels(m, g, range(25)).fc1.in_features
        400
    """
    return remove_groups(model, [(group, keep)])


def remove_groups(model: nn.Module, plan: Iterable[tuple[Group, Keep]]) -> nn.Module:
    """Remove channels of several groups of the same trace at once (in place).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torchshrink.graph import dependency_groups
        >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6), nn.Linear(6, 1))
        >>> a, b = dependency_groups(m, torch.zeros(1, 4))
        >>> remove_groups(m, [(a, [0, 1]), (b, [2])])[2].weight.shape
        torch.Size([1, 2])
    """
    drops: dict[tuple[str, str, int], torch.Tensor] = {}
    lengths: dict[tuple[str, str, int], int] = {}
    touched: dict[str, None] = {}
    for group, keep in plan:
        kept = _check_keep(group, keep)
        for e in group.entries:
            key = (e.module, e.param, e.dim)
            lengths[key] = e.length
            mask = drops.get(key, torch.zeros(e.length, dtype=torch.bool))
            mask[e.index[~kept[e.channel]]] = True
            drops[key] = mask
            if e.role != "direct":
                touched[e.handler_module] = None
    for (mod_name, pname, dim), drop in drops.items():
        owner = model.get_submodule(mod_name)
        tensor = _get(owner, pname)
        if tensor.shape[dim] != lengths[(mod_name, pname, dim)]:
            raise ConfigError(
                f"stale group: '{mod_name}.{pname}' has size {tensor.shape[dim]} along dim {dim}, "
                f"the group was built for {lengths[(mod_name, pname, dim)]}; build the groups "
                "again after removing channels"
            )
        _set(owner, pname, tensor.index_select(dim, (~drop).nonzero().flatten()))
    for name in touched:
        module = model.get_submodule(name)
        handler = get_op_handler(module)
        if handler is None:
            continue
        new = handler.update(module)
        if new is not None and new is not module and name:
            _replace(model, name, new)
    return model


def _check_keep(group: Group, keep: Keep) -> torch.Tensor:
    if not group.prunable:
        raise ConfigError(f"group {group.id} ('{group.label}') cannot shrink: {group.reasons[0]}")
    idx = torch.as_tensor(list(keep) if not isinstance(keep, torch.Tensor) else keep)
    idx = idx.long().flatten()
    if idx.numel() == 0:
        raise ConfigError(
            f"keep is empty: removing every {group.unit} of group {group.id} ('{group.label}') "
            "would delete the layer; keep at least one"
        )
    bad = idx[(idx < 0) | (idx >= group.size)]
    if bad.numel():
        raise ConfigError(
            f"keep index {int(bad[0])} is out of range for group {group.id} ('{group.label}') "
            f"of {group.size} {group.unit}s"
        )
    kept = torch.zeros(group.size, dtype=torch.bool)
    kept[idx] = True
    return kept


def _get(owner: nn.Module, name: str) -> torch.Tensor:
    t = owner._parameters.get(name) if name in owner._parameters else owner._buffers.get(name)
    assert t is not None, name
    return t


def _set(owner: nn.Module, name: str, value: torch.Tensor) -> None:
    # A new Parameter (not an in-place resize) so that shapes, grads and optimizers never see
    # a half-updated tensor; optimizer state of the old one must be rebuilt by the caller.
    if name in owner._parameters:
        old: Any = owner._parameters[name]
        owner._parameters[name] = nn.Parameter(value.detach().clone(), old.requires_grad)
    else:
        owner._buffers[name] = value.detach().clone()


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)
