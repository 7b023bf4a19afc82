"""Replace a standard convolution by depthwise + pointwise, initialised by decomposition.

**The decomposition.** A depthwise-separable pair with depth multiplier ``m`` computes the
kernel ``W_hat[o, i] = sum_{j<m} P[o, i*m + j] * D[i*m + j]`` (``D`` the kxk depthwise filters,
``P`` the 1x1 pointwise weights). For each input channel ``i`` this is a rank-``m`` matrix
``(O, kh*kw)``. So we take the slice ``W[:, i]`` reshaped to ``(O, kh*kw)`` and keep its rank-``m``
truncated SVD ``sum_j s_j u_j v_j^T``: ``D[i*m + j] = sqrt(s_j) v_j``,
``P[:, i*m + j] = sqrt(s_j) u_j``. By Eckart-Young this is, channel by channel, the best such
pair in Frobenius norm, and it is exact when ``m >= min(O, kh*kw)``. The bias moves to the
pointwise conv; stride, padding and dilation stay on the depthwise conv. Fine-tune or distill
afterwards to recover accuracy.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(4, 8, 3, padding=1)
    >>> pair = separable_factorize(conv, multiplier=8)  # min(O, k*k) = 8: exact
    >>> x = torch.randn(2, 4, 5, 5)
    >>> torch.allclose(pair(x), conv(x), atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.lowrank.tucker import check_conv, conv_geometry


def separable_params(conv: nn.Conv2d, multiplier: int = 1) -> int:
    """Parameters of the depthwise (multiplier ``m``) + pointwise pair replacing ``conv``.

    Example:
        >>> separable_params(nn.Conv2d(64, 64, 3), 1)
        4736
    """
    kh, kw = conv.kernel_size
    mid = conv.in_channels * multiplier
    bias = conv.out_channels if conv.bias is not None else 0
    return mid * kh * kw + mid * conv.out_channels + bias


def separable_factors(
    weight: torch.Tensor, multiplier: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Depthwise ``(I*m, 1, kh, kw)`` and pointwise ``(O, I*m, 1, 1)`` weights for ``weight``.

    Example:
        >>> dw, pw = separable_factors(torch.randn(8, 4, 3, 3), 2)
        >>> tuple(dw.shape), tuple(pw.shape)
        ((8, 1, 3, 3), (8, 8, 1, 1))
    """
    o, i, kh, kw = weight.shape
    m = multiplier
    if not 1 <= m <= min(o, kh * kw):
        raise ConfigError(f"multiplier: must be in [1, {min(o, kh * kw)}], got {multiplier}")
    slices = weight.detach().double().transpose(0, 1).reshape(i, o, kh * kw)  # (I, O, k)
    u, s, vh = torch.linalg.svd(slices, full_matrices=False)  # (I,O,q) (I,q) (I,q,k)
    root = s[:, :m].sqrt()  # (I, m)
    dw = (root[:, :, None] * vh[:, :m, :]).reshape(i * m, 1, kh, kw)  # (I*m, 1, kh, kw)
    pw = (u[:, :, :m] * root[:, None, :]).permute(1, 0, 2).reshape(o, i * m)  # (O, I*m)
    return dw.to(weight.dtype), pw[:, :, None, None].to(weight.dtype)


def separable_reconstruct(dw: torch.Tensor, pw: torch.Tensor, in_channels: int) -> torch.Tensor:
    """The full kernel ``(O, I, kh, kw)`` that a depthwise + pointwise pair computes.

    Args:
        dw: depthwise weight ``(I*m, 1, kh, kw)``.
        pw: pointwise weight ``(O, I*m, 1, 1)``.
        in_channels: ``I``.

    Example:
        >>> w = torch.randn(3, 2, 1, 1, dtype=torch.float64)
        >>> torch.allclose(separable_reconstruct(*separable_factors(w, 1), 2), w)
        True
    """
    mid, _, kh, kw = dw.shape
    o = pw.shape[0]
    m = mid // in_channels
    d = dw.reshape(in_channels, m, kh * kw)  # (I, m, k)
    p = pw.reshape(o, in_channels, m)  # (O, I, m)
    return torch.einsum("oij,ijk->oik", p, d).reshape(o, in_channels, kh, kw)


def separable_factorize(conv: nn.Module, *, multiplier: int = 1) -> nn.Sequential:
    """``Sequential(depthwise kxk, pointwise 1x1)`` initialised from ``conv`` (not changed).

    Args:
        conv: an ungrouped ``nn.Conv2d``.
        multiplier: depth multiplier ``m`` (depthwise output channels ``I*m``).

    Raises:
        UnsupportedLayerError: not an ungrouped Conv2d.
        ConfigError: ``multiplier`` out of range.

    Example:
        >>> pair = separable_factorize(nn.Conv2d(16, 32, 3, stride=2, padding=1))
        >>> pair[0].groups, tuple(pair[1].weight.shape)
        (16, (32, 16, 1, 1))
    """
    conv = check_conv(conv)
    dw_w, pw_w = separable_factors(conv.weight, multiplier)
    mid = conv.in_channels * multiplier
    kernel: Any = conv.kernel_size
    dw = nn.Conv2d(
        conv.in_channels, mid, kernel, groups=conv.in_channels, bias=False, **conv_geometry(conv)
    )
    pw = nn.Conv2d(mid, conv.out_channels, 1, bias=conv.bias is not None)
    dw.weight.data.copy_(dw_w)
    pw.weight.data.copy_(pw_w)
    if conv.bias is not None:
        assert pw.bias is not None
        pw.bias.data.copy_(conv.bias.detach())
    return nn.Sequential(dw, pw).to(device=conv.weight.device, dtype=conv.weight.dtype)
