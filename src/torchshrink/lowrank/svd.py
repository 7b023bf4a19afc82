"""Truncated SVD of a Linear (or 1x1 Conv2d) layer into two thinner layers.

``W (out, in) ~= U_r S_r V_r^T`` is split evenly: the first layer gets ``sqrt(S_r) V_r^T``
``(r, in)`` without bias, the second ``U_r sqrt(S_r)`` ``(out, r)`` with the original bias, so
both factors have the same scale (better conditioned for fine-tuning). By Eckart-Young the
truncation is the best rank-``r`` approximation in Frobenius norm. The replacement is a plain
``nn.Sequential`` of torch.nn layers, so model files save and load it with no registration.

Rank selection: :func:`rank_for_energy` (smallest ``r`` keeping a fraction of ``sum s^2``) and
:func:`rank_for_ratio` (largest ``r`` that still shrinks the layer's parameters by a factor).

Example:
    >>> import torch
    >>> from torch import nn
    >>> fc = nn.Linear(20, 30)
    >>> low = svd_factorize(fc, rank=20)
    >>> x = torch.randn(4, 20)
    >>> torch.allclose(low(x), fc(x), atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchshrink.core.errors import ConfigError, UnsupportedLayerError


def matrix_of(layer: nn.Module) -> torch.Tensor:
    """The ``(out, in)`` weight matrix of a Linear or a 1x1, ungrouped Conv2d.

    Raises:
        UnsupportedLayerError: any other layer.

    Example:
        >>> matrix_of(nn.Conv2d(3, 5, 1)).shape
        torch.Size([5, 3])
    """
    if isinstance(layer, nn.Linear):
        return layer.weight.detach()
    if isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.groups == 1:
        return layer.weight.detach().flatten(1)  # (out, in)
    raise UnsupportedLayerError(
        f"SVD factorization handles nn.Linear and 1x1 ungrouped nn.Conv2d, got {layer!r}"
    )


def singular_values(layer: nn.Module) -> torch.Tensor:
    """Singular values of the layer's weight matrix, descending (computed in float64).

    Example:
        >>> singular_values(nn.Linear(4, 3)).shape
        torch.Size([3])
    """
    return torch.linalg.svdvals(matrix_of(layer).double())


def rank_for_energy(s: torch.Tensor, energy: float) -> int:
    """The smallest ``r`` with ``sum(s[:r]^2) >= energy * sum(s^2)``.

    Args:
        s: singular values (any order).
        energy: kept fraction in ``(0, 1]``.

    Raises:
        ConfigError: ``energy`` outside ``(0, 1]``.

    Example:
        >>> rank_for_energy(torch.tensor([3.0, 2.0, 1.0]), 0.9)
        2
    """
    if not 0 < energy <= 1:
        raise ConfigError(f"energy: must be in (0, 1], got {energy}")
    e = torch.sort(s.double() ** 2, descending=True).values
    cum = torch.cumsum(e, 0) / e.sum().clamp_min(1e-300)
    # Tolerance so that energy=1.0 is reached despite rounding of the cumulative sum.
    r = int(torch.searchsorted(cum, torch.tensor(energy, dtype=torch.float64) - 1e-12)) + 1
    return max(1, min(r, len(s)))


def svd_params(out_features: int, in_features: int, rank: int, *, bias: bool) -> int:
    """Parameters of the factorized pair: ``r * (in + out)`` (+ ``out`` for the bias).

    Example:
        >>> svd_params(300, 784, 10, bias=True)
        11140
    """
    return rank * (in_features + out_features) + (out_features if bias else 0)


def rank_for_ratio(out_features: int, in_features: int, ratio: float, *, bias: bool) -> int:
    """The largest ``r`` with ``params_before / params_after >= ratio`` (at least 1).

    Args:
        out_features: rows of the weight.
        in_features: columns of the weight.
        ratio: wanted parameter reduction of the layer, ``> 1``.
        bias: whether the layer has a bias (counted on both sides).

    Raises:
        ConfigError: ``ratio <= 1``.

    Example:
        >>> rank_for_ratio(300, 784, 2.0, bias=True)
        108
    """
    if ratio <= 1:
        raise ConfigError(f"ratio: must be > 1, got {ratio}")
    before = out_features * in_features + (out_features if bias else 0)
    extra = out_features if bias else 0
    r = int((before / ratio - extra) // (in_features + out_features))
    return max(1, r)


def svd_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced rank-``rank`` factors ``(A (r, in), B (out, r))`` with ``B @ A ~= weight``.

    Example:
        >>> w = torch.randn(6, 4)
        >>> a, b = svd_factors(w, 4)
        >>> torch.allclose(b @ a, w, atol=1e-5)
        True
    """
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)  # (out,k) (k,) (k,in)
    root = s[:rank].sqrt()
    a = root[:, None] * vh[:rank]  # (r, in)
    b = u[:, :rank] * root[None, :]  # (out, r)
    return a.to(weight.dtype), b.to(weight.dtype)


def svd_factorize(layer: nn.Module, rank: int) -> nn.Sequential:
    """Replace ``layer`` by ``Sequential(first, second)`` of rank ``rank`` (new modules).

    A Linear becomes two Linears, a 1x1 Conv2d two 1x1 Conv2ds (stride and padding stay on
    the first). The original layer is not changed.

    Args:
        layer: ``nn.Linear`` or 1x1 ungrouped ``nn.Conv2d``.
        rank: inner width, ``1 <= rank <= min(out, in)``.

    Raises:
        ConfigError: ``rank`` out of range.
        UnsupportedLayerError: another layer type.

    Example:
        >>> low = svd_factorize(nn.Linear(784, 300), rank=32)
        >>> [tuple(m.weight.shape) for m in low]
        [(32, 784), (300, 32)]
    """
    w = matrix_of(layer)  # (out, in)
    out_f, in_f = w.shape
    if not 1 <= rank <= min(out_f, in_f):
        raise ConfigError(f"rank: must be in [1, {min(out_f, in_f)}] for {layer!r}, got {rank}")
    a, b = svd_factors(w, rank)
    bias = getattr(layer, "bias", None)
    first: nn.Module
    second: nn.Module
    if isinstance(layer, nn.Linear):
        first = nn.Linear(in_f, rank, bias=False)
        second = nn.Linear(rank, out_f, bias=bias is not None)
        first.weight.data.copy_(a)
        second.weight.data.copy_(b)
    else:
        assert isinstance(layer, nn.Conv2d)
        geometry: dict[str, Any] = {"stride": layer.stride, "padding": layer.padding}
        first = nn.Conv2d(in_f, rank, 1, bias=False, padding_mode=layer.padding_mode, **geometry)
        second = nn.Conv2d(rank, out_f, 1, bias=bias is not None)
        first.weight.data.copy_(a[:, :, None, None])
        second.weight.data.copy_(b[:, :, None, None])
    if bias is not None:
        assert second.bias is not None
        second.bias.data.copy_(bias.detach())
    device, dtype = w.device, w.dtype
    return nn.Sequential(first, second).to(device=device, dtype=dtype)
