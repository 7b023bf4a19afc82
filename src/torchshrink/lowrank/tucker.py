"""Tucker-2 decomposition of a Conv2d into 1x1 -> kxk -> 1x1 (Kim et al. 2016).

The kernel ``W (O, I, kh, kw)`` is decomposed on its output and input modes only:
``W ~= G x_0 U_out x_1 U_in`` with ``U_out (O, r_out)``, ``U_in (I, r_in)`` orthonormal and the
core ``G (r_out, r_in, kh, kw)``. The factors come from HOSVD (leading left singular vectors of
the mode-0 and mode-1 unfoldings), optionally refined by a few ALS sweeps (HOOI), each of which
can only lower the error. As layers: a 1x1 conv ``I -> r_in`` (weight ``U_in^T``), the kxk conv
``r_in -> r_out`` with the original stride / padding / dilation (weight ``G``), and a 1x1 conv
``r_out -> O`` (weight ``U_out``) with the original bias. Zero padding commutes with the
bias-free 1x1 projection, so full ranks reproduce the convolution exactly.

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(8, 16, 3, padding=1)
    >>> low = tucker2_factorize(conv, (8, 16))
    >>> x = torch.randn(2, 8, 6, 6)
    >>> torch.allclose(low(x), conv(x), atol=1e-5)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchshrink.core.errors import ConfigError, UnsupportedLayerError
from torchshrink.lowrank.svd import rank_for_energy


def check_conv(conv: nn.Module) -> nn.Conv2d:
    """``conv`` if Tucker-2 applies to it (an ungrouped Conv2d), else a clear error.

    Raises:
        UnsupportedLayerError: not a Conv2d, or a grouped / depthwise one.

    Example:
        >>> check_conv(nn.Conv2d(3, 4, 3)).groups
        1
    """
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise UnsupportedLayerError(
            f"Tucker-2 / separable factorization handles ungrouped nn.Conv2d, got {conv!r}"
        )
    return conv


def conv_geometry(conv: nn.Conv2d) -> dict[str, Any]:
    """Stride, padding, dilation and padding mode of ``conv`` as constructor keywords.

    Example:
        >>> conv_geometry(nn.Conv2d(1, 1, 3, stride=2))["stride"]
        (2, 2)
    """
    return {
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "padding_mode": conv.padding_mode,
    }


def _leading(mat: torch.Tensor, r: int) -> torch.Tensor:
    u, _, _ = torch.linalg.svd(mat, full_matrices=False)
    return u[:, :r]


def tucker2_decompose(
    weight: torch.Tensor, ranks: tuple[int, int], *, als_iters: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HOSVD (+ ``als_iters`` HOOI sweeps) of ``weight (O, I, kh, kw)``.

    Args:
        weight: the convolution kernel.
        ranks: ``(r_in, r_out)``.
        als_iters: alternating refinement sweeps after HOSVD.

    Returns:
        ``(u_in (I, r_in), core (r_out, r_in, kh, kw), u_out (O, r_out))`` in float64.

    Example:
        >>> u_in, core, u_out = tucker2_decompose(torch.randn(6, 4, 3, 3), (2, 3))
        >>> tuple(u_in.shape), tuple(core.shape), tuple(u_out.shape)
        ((4, 2), (3, 2, 3, 3), (6, 3))
    """
    w = weight.detach().double()  # (O, I, kh, kw)
    o, i = w.shape[:2]
    r_in, r_out = ranks
    if not (1 <= r_in <= i and 1 <= r_out <= o):
        raise ConfigError(f"ranks: (r_in, r_out) must be within (1..{i}, 1..{o}), got {ranks}")
    u_out = _leading(w.reshape(o, -1), r_out)  # (O, r_out)
    u_in = _leading(w.transpose(0, 1).reshape(i, -1), r_in)  # (I, r_in)
    for _ in range(als_iters):
        y = torch.einsum("oikl,is->oskl", w, u_in)  # (O, r_in, kh, kw)
        u_out = _leading(y.reshape(o, -1), r_out)
        y = torch.einsum("oikl,or->rikl", w, u_out)  # (r_out, I, kh, kw)
        u_in = _leading(y.transpose(0, 1).reshape(i, -1), r_in)
    core = torch.einsum("oikl,or,is->rskl", w, u_out, u_in)  # (r_out, r_in, kh, kw)
    return u_in, core, u_out


def tucker2_reconstruct(
    u_in: torch.Tensor, core: torch.Tensor, u_out: torch.Tensor
) -> torch.Tensor:
    """The low-rank kernel ``(O, I, kh, kw)`` that the three factors represent.

    Example:
        >>> w = torch.randn(5, 4, 3, 3, dtype=torch.float64)
        >>> torch.allclose(tucker2_reconstruct(*tucker2_decompose(w, (4, 5))), w)
        True
    """
    return torch.einsum("rskl,or,is->oikl", core, u_out, u_in)


def tucker2_params(conv: nn.Conv2d, ranks: tuple[int, int]) -> int:
    """Parameters of the 1x1 -> kxk -> 1x1 replacement with ``ranks = (r_in, r_out)``.

    Example:
        >>> tucker2_params(nn.Conv2d(64, 64, 3), (16, 16))
        4416
    """
    r_in, r_out = ranks
    kh, kw = conv.kernel_size
    bias = conv.out_channels if conv.bias is not None else 0
    return conv.in_channels * r_in + r_in * r_out * kh * kw + r_out * conv.out_channels + bias


def tucker2_ranks_for_energy(conv: nn.Conv2d, energy: float) -> tuple[int, int]:
    """Per mode, the smallest rank keeping ``energy`` of the unfolding's squared singular values.

    Example:
        >>> tucker2_ranks_for_energy(nn.Conv2d(4, 6, 3), 1.0)
        (4, 6)
    """
    w = check_conv(conv).weight.detach().double()
    o, i = w.shape[:2]
    s_out = torch.linalg.svdvals(w.reshape(o, -1))
    s_in = torch.linalg.svdvals(w.transpose(0, 1).reshape(i, -1))
    return rank_for_energy(s_in, energy), rank_for_energy(s_out, energy)


def tucker2_ranks_for_ratio(conv: nn.Conv2d, ratio: float) -> tuple[int, int]:
    """The largest ranks, proportional to the channel counts, that shrink the layer ``ratio``x.

    Raises:
        ConfigError: ``ratio <= 1``.

    Example:
        >>> conv = nn.Conv2d(64, 64, 3)
        >>> r = tucker2_ranks_for_ratio(conv, 2.0)
        >>> r, (64 * 64 * 9 + 64) / tucker2_params(conv, r) >= 2.0
        ((38, 38), True)
    """
    if ratio <= 1:
        raise ConfigError(f"ratio: must be > 1, got {ratio}")
    conv = check_conv(conv)
    o, i = conv.out_channels, conv.in_channels
    before = conv.weight.numel() + (o if conv.bias is not None else 0)
    best = (1, 1)
    for r_out in range(1, o + 1):
        r_in = max(1, min(i, round(r_out * i / o)))
        if before / tucker2_params(conv, (r_in, r_out)) >= ratio:
            best = (r_in, r_out)
    return best


def tucker2_factorize(
    conv: nn.Module, ranks: tuple[int, int], *, als_iters: int = 0
) -> nn.Sequential:
    """Replace ``conv`` by ``Sequential(1x1 I->r_in, kxk r_in->r_out, 1x1 r_out->O)``.

    Args:
        conv: an ungrouped ``nn.Conv2d`` (not changed).
        ranks: ``(r_in, r_out)``.
        als_iters: HOOI refinement sweeps after HOSVD.

    Raises:
        UnsupportedLayerError: not an ungrouped Conv2d.
        ConfigError: ranks out of range.

    Example:
        >>> low = tucker2_factorize(nn.Conv2d(16, 32, 3, stride=2), (4, 8))
        >>> [tuple(m.weight.shape) for m in low]
        [(4, 16, 1, 1), (8, 4, 3, 3), (32, 8, 1, 1)]
    """
    conv = check_conv(conv)
    u_in, core, u_out = tucker2_decompose(conv.weight, ranks, als_iters=als_iters)
    r_in, r_out = ranks
    first = nn.Conv2d(conv.in_channels, r_in, 1, bias=False)
    kernel: Any = conv.kernel_size
    middle = nn.Conv2d(r_in, r_out, kernel, bias=False, **conv_geometry(conv))
    last = nn.Conv2d(r_out, conv.out_channels, 1, bias=conv.bias is not None)
    dtype = conv.weight.dtype
    first.weight.data.copy_(u_in.t()[:, :, None, None].to(dtype))  # (r_in, I, 1, 1)
    middle.weight.data.copy_(core.to(dtype))  # (r_out, r_in, kh, kw)
    last.weight.data.copy_(u_out[:, :, None, None].to(dtype))  # (O, r_out, 1, 1)
    if conv.bias is not None:
        assert last.bias is not None
        last.bias.data.copy_(conv.bias.detach())
    return nn.Sequential(first, middle, last).to(device=conv.weight.device, dtype=dtype)
