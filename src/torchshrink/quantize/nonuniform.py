"""Beyond uniform levels: power-of-two / logarithmic, binary, ternary and k-means codebooks.

Example:
    >>> import torch
    >>> w = torch.tensor([[0.3, -0.1, 0.02], [-1.0, 0.5, 0.0]])
    >>> pot_quantize(w, 4, axis=0).tolist()
    [[0.25, -0.125, 0.015625], [-1.0, 0.5, 0.0]]
    >>> t = ternarize(w)
    >>> t.codes.tolist(), [round(v, 3) for v in t.scale.tolist()]
    ([[1, -1, 0], [-1, 1, 0]], [0.2, 0.75])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from torchshrink.core.errors import ConfigError
from torchshrink.core.kmeans import KMeansResult, kmeans_1d
from torchshrink.quantize.primitives import check_finite


@dataclass(frozen=True)
class ScaledCodes:
    """Small integer codes times a per-channel (or per-tensor) scale.

    Attributes:
        codes: int8 tensor shaped like the weight, values in {-1, 1} (binary) or {-1, 0, 1}.
        scale: float32 ``(C,)`` for channel axis ``axis``, or ``()`` when ``axis`` is None.
        axis: the channel axis of ``codes``, or None for one scale per tensor.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    axis: int | None

    def dequantize(self) -> torch.Tensor:
        """Float32 weights ``codes * scale``."""
        return self.codes.float() * _expand(self.scale, self.codes.dim(), self.axis)


def _expand(per_channel: torch.Tensor, ndim: int, axis: int | None) -> torch.Tensor:
    if axis is None:
        return per_channel
    shape = [1] * ndim
    shape[axis] = -1
    return per_channel.reshape(shape)


def _channel_abs(w: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``|w|`` as ``(C, K)`` rows, one per channel (one row when ``axis`` is None)."""
    a = w.detach().double().abs()
    if axis is None or w.dim() == 0:
        return a.reshape(1, -1)
    return a.movedim(axis, 0).reshape(w.shape[axis], -1)


def _axis(w: torch.Tensor, axis: int | None) -> int | None:
    if axis is None or w.dim() == 0:
        return None
    if not -w.dim() <= axis < w.dim():
        raise ConfigError(f"axis={axis} is out of range for a tensor of shape {tuple(w.shape)}")
    return axis % w.dim()


def binarize(w: torch.Tensor, *, axis: int | None = 0, name: str = "weight") -> ScaledCodes:
    """Binary weights: ``sign(w)`` (0 counts as +1) times the channel's mean ``|w|`` (XNOR-Net).

    The mean absolute value is the scale that minimises ``||w - scale * sign(w)||^2``.

    Example:
        >>> binarize(torch.tensor([[1.0, -3.0]])).dequantize().tolist()
        [[2.0, -2.0]]
    """
    check_finite(w, name)
    ax = _axis(w, axis)
    scale = _channel_abs(w, ax).mean(dim=1).float()  # (C,)
    codes = torch.where(w >= 0, 1, -1).to(torch.int8)
    return ScaledCodes(codes, scale if ax is not None else scale.reshape(()), ax)


def ternarize(
    w: torch.Tensor, *, axis: int | None = 0, threshold: float = 0.7, name: str = "weight"
) -> ScaledCodes:
    """Ternary weights (TWN): codes in {-1, 0, 1} with a per-channel scale.

    Per channel, ``delta = threshold * mean|w|``; weights with ``|w| > delta`` keep their sign,
    the rest become 0, and the scale is the mean ``|w|`` of the kept weights. On Gaussian
    weights about 42% of the codes are 0 with the default 0.7.

    Example:
        >>> ternarize(torch.tensor([[2.0, -2.0, 0.1]])).dequantize().tolist()
        [[2.0, -2.0, 0.0]]
    """
    if threshold < 0:
        raise ConfigError(f"threshold must be >= 0, got {threshold}")
    check_finite(w, name)
    ax = _axis(w, axis)
    rows = _channel_abs(w, ax)  # (C, K)
    delta = threshold * rows.mean(dim=1, keepdim=True)  # (C, 1)
    keep = rows > delta
    kept = keep.sum(dim=1)
    scale = ((rows * keep).sum(dim=1) / kept.clamp(min=1)).float()  # (C,), 0 if none kept
    delta_full = _expand(delta.squeeze(1), w.dim(), ax) if ax is not None else delta.squeeze()
    mask = w.detach().double().abs() > delta_full
    codes = (torch.sign(w.detach()) * mask).to(torch.int8)
    return ScaledCodes(codes, scale if ax is not None else scale.reshape(()), ax)


def log_quantize(
    x: torch.Tensor,
    bits: int,
    *,
    base: float = 2.0,
    axis: int | None = None,
    name: str = "tensor",
) -> torch.Tensor:
    """Round to signed logarithmic levels ``{0, +-base^e}`` with ``2^(bits-1) - 1`` exponents.

    One bit is the sign; the other ``bits - 1`` index the exponent, one code being zero. The
    top exponent is the level nearest the channel's max ``|x|``; each value goes to the
    nearest level (linear distance), below half the smallest level to 0.

    Args:
        x: float tensor.
        bits: 2..8.
        base: ratio between consecutive levels, ``> 1`` (2 gives power-of-two levels).
        axis: channel axis for per-channel top exponents, or None for one per tensor.
        name: what ``x`` is, for error messages.

    Returns:
        Float32 tensor of ``x.shape`` holding only level values.

    Example:
        >>> log_quantize(torch.tensor([1.0, 0.3]), 3).tolist()
        [1.0, 0.25]
    """
    if not 2 <= bits <= 8:
        raise ConfigError(f"bits must be 2..8 for log_quantize, got {bits}")
    if base <= 1:
        raise ConfigError(f"base must be > 1, got {base}")
    check_finite(x, name)
    ax = _axis(x, axis)
    amax = _channel_abs(x, ax).amax(dim=1)  # (C,)
    amax_full = _expand(amax, x.dim(), ax) if ax is not None else amax.reshape(())
    lb = math.log(base)

    def nearest_exponent(m: torch.Tensor) -> torch.Tensor:
        m = m.clamp(min=1e-300)
        e = torch.floor(torch.log(m) / lb)
        e = torch.where(base**e > m, e - 1, e)  # guard floor() against log rounding
        return torch.where(m >= (base**e) * (1 + base) / 2, e + 1, e)

    e_max = nearest_exponent(amax_full)
    e_min = e_max - (2 ** (bits - 1) - 2)
    m = x.detach().double().abs()
    e = torch.minimum(torch.maximum(nearest_exponent(m), e_min), e_max)
    level = base**e
    zero = (m < base**e_min / 2) | (amax_full == 0)
    out = torch.where(zero, 0.0, torch.sign(x.detach().double()) * level)
    return out.float()


def pot_quantize(
    x: torch.Tensor, bits: int, *, axis: int | None = None, name: str = "tensor"
) -> torch.Tensor:
    """Power-of-two levels: :func:`log_quantize` with base 2 (shifts instead of multiplies).

    Example:
        >>> pot_quantize(torch.tensor([0.7, -0.2]), 4).tolist()
        [0.5, -0.25]
    """
    return log_quantize(x, bits, base=2.0, axis=axis, name=name)


def kmeans_quantize(
    x: torch.Tensor,
    k: int,
    *,
    exact: bool = False,
    max_iter: int = 100,
    name: str = "tensor",
) -> KMeansResult:
    """A ``k``-entry codebook for the whole tensor (linear init, deterministic).

    Thin wrapper over :func:`torchshrink.core.kmeans.kmeans_1d`; ``labels`` have the shape of
    ``x`` and ``reconstruct()`` gives the quantized tensor.

    Example:
        >>> res = kmeans_quantize(torch.tensor([[0.0, 1.0], [1.0, 5.0]]), 3)
        >>> res.reconstruct().tolist()
        [[0.0, 1.0], [1.0, 5.0]]
    """
    check_finite(x, name)
    return kmeans_1d(x, k, exact=exact, max_iter=max_iter)
