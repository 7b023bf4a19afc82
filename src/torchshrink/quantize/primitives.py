"""Pure uniform quantization primitives: qparams, quantize, dequantize, fake-quantize (STE).

Every function takes the :class:`QuantSpec` that says how the tensor is cut into blocks that
share one scale (per tensor, per channel, per group). Scales and zero points use the compact
shapes described there. Nothing here holds state or changes a module.

Example:
    >>> import torch
    >>> spec = QuantSpec(bits=8, granularity="per_channel")
    >>> w = torch.randn(4, 16)
    >>> scale, zp = qparams_from_tensor(w, spec)
    >>> q = quantize(w, scale, zp, spec)
    >>> q.dtype, scale.shape
    (torch.int8, torch.Size([4]))
    >>> bool((dequantize(q, scale, zp, spec) - w).abs().max() <= scale.max() / 2 + 1e-6)
    True
"""

from __future__ import annotations

import torch

from torchshrink.core.errors import ConfigError
from torchshrink.quantize.spec import QuantSpec

EPS = torch.finfo(torch.float32).eps
_FMAX = torch.finfo(torch.float32).max


def check_finite(x: torch.Tensor, name: str = "tensor") -> None:
    """Raise :class:`ConfigError` naming ``name`` if ``x`` holds NaN or Inf.

    Example:
        >>> check_finite(torch.ones(3), "fc.weight")
    """
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        kind = "NaN" if bool(torch.isnan(x).any()) else "Inf"
        n_bad = int((~torch.isfinite(x)).sum())
        raise ConfigError(
            f"{name} contains {kind} ({n_bad} non-finite of {x.numel()} values); "
            "cannot quantize non-finite values"
        )


def to_blocks(x: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """View ``x`` as ``(R, K)``: one row per scale block (R = 1, C or C * G).

    Raises:
        ConfigError: bad axis, or ``group_size`` does not divide the flattened input dim.
    """
    if spec.granularity == "per_tensor" or x.dim() == 0:
        return x.reshape(1, -1)  # (1, N)
    axis = spec.resolve_axis(x.dim())
    rows = x.movedim(axis, 0).reshape(x.shape[axis], -1)  # (C, K)
    if spec.granularity == "per_channel":
        return rows
    assert spec.group_size is not None  # guaranteed by QuantSpec validation
    k = rows.shape[1]
    if k % spec.group_size != 0:
        raise ConfigError(
            f"QuantSpec.group_size={spec.group_size} does not divide the input dim {k} "
            f"of a tensor of shape {tuple(x.shape)} (axis {axis})"
        )
    return rows.reshape(-1, spec.group_size)  # (C * G, group_size)


def from_blocks(blocks: torch.Tensor, spec: QuantSpec, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`to_blocks` for a tensor of the original ``shape``."""
    if spec.granularity == "per_tensor" or len(shape) == 0:
        return blocks.reshape(shape)
    axis = spec.resolve_axis(len(shape))
    moved = (shape[axis], *shape[:axis], *shape[axis + 1 :])
    return blocks.reshape(moved).movedim(0, axis)


def param_shape(x_shape: torch.Size, spec: QuantSpec) -> tuple[int, ...]:
    """Compact shape of the scale / zero point for a tensor of shape ``x_shape``."""
    if spec.granularity == "per_tensor" or len(x_shape) == 0:
        return ()
    c = x_shape[spec.resolve_axis(len(x_shape))]
    if spec.granularity == "per_channel":
        return (c,)
    assert spec.group_size is not None
    k = max(1, torch.Size(x_shape).numel()) // max(c, 1)
    return (c, k // spec.group_size)


def compute_qparams(
    min_val: torch.Tensor, max_val: torch.Tensor, spec: QuantSpec
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float32, floored at float32 eps) and zero point (int32) for a range.

    The range is widened to contain 0 so that zero is exactly representable (padding, ReLU).
    Works in float64 so huge ranges cannot overflow; shapes are kept.

    Example:
        >>> s, zp = compute_qparams(torch.tensor(-1.0), torch.tensor(3.0), QuantSpec.preset("uint8"))
        >>> round(float(s), 5), int(zp)
        (0.01569, 64)
    """
    check_finite(min_val, "observed minimum")
    check_finite(max_val, "observed maximum")
    lo = torch.clamp(min_val.double(), max=0.0)
    hi = torch.clamp(max_val.double(), min=0.0)
    qmin, qmax = spec.qmin, spec.qmax
    if spec.symmetric:
        amax = torch.maximum(-lo, hi)
        scale = amax / ((qmax - qmin) / 2)
        mid = 0 if spec.signed else (qmin + qmax + 1) // 2
        zp = torch.full_like(scale, float(mid))
    else:
        scale = (hi - lo) / (qmax - qmin)
        safe = scale.clamp(min=EPS)
        zp = (qmin - torch.round(lo / safe)).clamp(qmin, qmax)
    scale = scale.clamp(min=EPS, max=_FMAX).float()
    return scale, zp.to(torch.int32)


def block_minmax(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block minimum and maximum of ``x`` in the compact parameter shape."""
    blocks = to_blocks(x.detach(), spec)  # (R, K)
    shape = param_shape(x.shape, spec)
    if blocks.numel() == 0:
        zero = torch.zeros(shape)
        return zero, zero.clone()
    return blocks.amin(dim=1).reshape(shape), blocks.amax(dim=1).reshape(shape)


def qparams_from_tensor(
    x: torch.Tensor, spec: QuantSpec, *, name: str = "tensor"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max scale and zero point of ``x`` itself (the usual choice for weights)."""
    check_finite(x, name)
    lo, hi = block_minmax(x, spec)
    return compute_qparams(lo, hi, spec)


def _round(v: torch.Tensor, spec: QuantSpec, generator: torch.Generator | None) -> torch.Tensor:
    if spec.rounding == "nearest":
        return torch.round(v)
    if spec.rounding == "floor":
        return torch.floor(v)
    noise = torch.rand(v.shape, generator=generator, device=v.device, dtype=v.dtype)
    return torch.floor(v + noise)  # E[result] = v: unbiased


def _scaled(x: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, spec: QuantSpec):
    """``x / scale + zp`` blockwise as (R, K) float32, plus the (R, 1) scale and zp."""
    blocks = to_blocks(x, spec).float()  # (R, K)
    s = scale.float().reshape(-1, 1).clamp(min=EPS)  # (R, 1)
    z = zp.float().reshape(-1, 1)  # (R, 1)
    if s.shape[0] not in (1, blocks.shape[0]):
        raise ConfigError(
            f"scale has {s.shape[0]} entries but the spec cuts a tensor of shape "
            f"{tuple(x.shape)} into {blocks.shape[0]} blocks"
        )
    return blocks / s + z, s, z


def quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    spec: QuantSpec,
    *,
    name: str = "tensor",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integer codes ``clamp(round(x / scale) + zero_point, qmin, qmax)`` of ``x``.

    Args:
        x: float tensor.
        scale: compact-shaped scale from :func:`compute_qparams` or an observer.
        zero_point: compact-shaped zero point.
        spec: the quantization spec.
        name: what ``x`` is, for error messages.
        generator: random source for ``rounding="stochastic"``.

    Returns:
        Codes of ``x.shape`` in ``spec.storage_dtype``.

    Raises:
        ConfigError: ``x`` holds NaN / Inf, or the parameters do not fit the spec.
    """
    check_finite(x, name)
    v, _, _ = _scaled(x, scale, zero_point, spec)
    q = _round(v, spec, generator).clamp(spec.qmin, spec.qmax)
    return from_blocks(q, spec, x.shape).to(spec.storage_dtype)


def dequantize(
    q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, spec: QuantSpec
) -> torch.Tensor:
    """Float32 values ``(q - zero_point) * scale`` of integer codes ``q``."""
    blocks = to_blocks(q, spec).double()  # (R, K)
    s = scale.double().reshape(-1, 1)
    z = zero_point.double().reshape(-1, 1)
    # float64 then saturate: the outermost level of a huge range can exceed float32's max
    return from_blocks(((blocks - z) * s).clamp(-_FMAX, _FMAX).float(), spec, q.shape)


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    spec: QuantSpec,
    *,
    name: str = "tensor",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Quantize then dequantize, differentiable by the straight-through estimator.

    The forward value is ``dequantize(quantize(x))``; the gradient with respect to ``x`` is 1
    where ``x`` lies inside the representable range and 0 where it is clipped. Scale and zero
    point get no gradient (see :class:`LSQFakeQuant` for a learnable scale).

    Example:
        >>> x = torch.tensor([0.5, 3.0], requires_grad=True)
        >>> spec = QuantSpec(bits=8)
        >>> fake_quantize(x, torch.tensor(0.01), torch.tensor(0), spec).sum().backward()
        >>> x.grad.tolist()
        [1.0, 0.0]
    """
    check_finite(x, name)
    v, s, z = _scaled(x, scale, zero_point, spec)  # (R, K)
    q = _round(v.detach(), spec, generator).clamp(spec.qmin, spec.qmax)
    xq = ((q - z).double() * s.double()).clamp(-_FMAX, _FMAX).float()  # saturate, as dequantize
    inside = ((v >= spec.qmin) & (v <= spec.qmax)).to(v.dtype)
    xb = to_blocks(x, spec).float()
    # value = xq, gradient = inside (1 in range, 0 where clipped)
    out = xb * inside + (xq - xb * inside).detach()
    return from_blocks(out, spec, x.shape).to(x.dtype)
