"""Parameter counts, non-zero counts and bytes of a model (never changes the model).

* ``params``: number of parameter elements (tied / shared parameters counted once).
* ``nonzero_params``: parameter elements that are not exactly zero (what pruning removes).
* ``dense_bytes``: ``4 * params``, the size of the parameters stored densely as fp32: the
  reference that every compression ratio is taken against.
* ``weight_bytes``: bytes of the parameters at the dtypes they are actually stored in.
* ``buffer_bytes``: bytes of the buffers (BN running statistics, quantized weights kept as
  buffers, ...); not parameters, but stored in the model file.
* ``bytes_by_dtype``: parameters plus buffers, summed per dtype.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Linear(4, 2)
    >>> with torch.no_grad():
    ...     _ = m.weight.zero_()
    >>> s = param_stats(m)
    >>> (s.params, s.nonzero_params, s.dense_bytes)
    (10, 2, 40)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class ParamStats:
    """Counts and bytes of a model's parameters (see the module docstring for each field)."""

    params: int
    nonzero_params: int
    dense_bytes: int
    weight_bytes: int
    buffer_bytes: int
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)

    @property
    def density(self) -> float:
        """Fraction of parameters that are non-zero (1.0 for a model without parameters)."""
        return self.nonzero_params / self.params if self.params else 1.0

    @property
    def sparsity(self) -> float:
        """Fraction of parameters that are exactly zero."""
        return 1.0 - self.density


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of ``t``'s elements at its dtype (packed sub-byte formats use uint8 storage)."""
    return t.numel() * t.element_size()


def count_nonzero(tensors: Iterable[torch.Tensor]) -> int:
    """Total number of non-zero elements of ``tensors``."""
    with torch.no_grad():
        return sum(int(torch.count_nonzero(t.detach())) for t in tensors)


def _unique(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    # named_buffers() de-duplicates by object but two names may still alias one tensor.
    seen: set[int] = set()
    out = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def module_param_stats(module: nn.Module) -> tuple[int, int]:
    """``(params, nonzero)`` of the parameters that ``module`` owns directly (not its children).

    Example:
        >>> from torch import nn
        >>> module_param_stats(nn.Sequential(nn.Linear(2, 2)))
        (0, 0)
    """
    own = list(module.parameters(recurse=False))
    return sum(p.numel() for p in own), count_nonzero(own)


def param_stats(model: nn.Module) -> ParamStats:
    """Count parameters, non-zeros and bytes of ``model``.

    Args:
        model: any ``nn.Module``; shared parameters are counted once.

    Returns:
        A :class:`ParamStats`.

    Example:
        >>> from torch import nn
        >>> param_stats(nn.Conv2d(1, 20, 5)).params
        520
    """
    params = list(model.parameters())
    buffers = _unique(model.buffers())
    by_dtype: dict[str, int] = {}
    for t in [*params, *buffers]:
        key = dtype_name(t.dtype)
        by_dtype[key] = by_dtype.get(key, 0) + tensor_bytes(t)
    n = sum(p.numel() for p in params)
    return ParamStats(
        params=n,
        nonzero_params=count_nonzero(params),
        dense_bytes=4 * n,
        weight_bytes=sum(tensor_bytes(p) for p in params),
        buffer_bytes=sum(tensor_bytes(b) for b in buffers),
        bytes_by_dtype=dict(sorted(by_dtype.items())),
    )
