"""LSQ: fake quantization with a learnable step size (Esser et al., ICLR 2020).

The scale is an ``nn.Parameter`` trained with the task loss. Rounding passes the gradient
straight through, so the scale gets the LSQ gradient ``round(v) - v`` inside the range and
``qmin - zp`` / ``qmax - zp`` where values are clipped; that gradient is multiplied by
``g = 1 / sqrt(N * Qp)`` (``N`` elements share the scale, ``Qp = qmax``) to keep its size in
step with the weight gradients.

Example:
    >>> import torch
    >>> w = torch.randn(8, 16)
    >>> fq = LSQFakeQuant(QuantSpec(bits=4, granularity="per_channel"), w)
    >>> fq.scale.shape, fq(w).shape
    (torch.Size([8]), torch.Size([8, 16]))
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchshrink.quantize.primitives import (
    EPS,
    check_finite,
    from_blocks,
    qparams_from_tensor,
    to_blocks,
)
from torchshrink.quantize.spec import QuantSpec


def _grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """Value ``x`` (exactly: the added term is an exact zero), gradient multiplied by ``g``."""
    xg = x * g
    return x.detach() + (xg - xg.detach())


def _round_pass(x: torch.Tensor) -> torch.Tensor:
    """``round(x)`` forward (exactly), identity gradient."""
    return torch.round(x).detach() + (x - x.detach())


class LSQFakeQuant(nn.Module):
    """Fake-quantizer with a learnable scale (and a fixed zero point).

    Symmetric specs start from the LSQ initialisation ``2 * mean|x| / sqrt(Qp)`` per block;
    asymmetric specs start from the min-max scale and zero point of ``init``. Rounding is
    always to nearest. The module is pure: calling it never changes ``init`` or the input.

    Args:
        spec: the quantization spec (any granularity).
        init: a tensor like the ones to be quantized (the weight itself, or a calibration
            batch of activations); fixes the scale's shape and its starting value.
        name: what is quantized, for error messages.

    Example:
        >>> fq = LSQFakeQuant(QuantSpec(bits=8), torch.ones(4))
        >>> fq.scale.requires_grad, round(fq.scale.item(), 4)
        (True, 0.1775)
    """

    def __init__(self, spec: QuantSpec, init: torch.Tensor, *, name: str = "tensor") -> None:
        super().__init__()
        check_finite(init, name)
        self.spec = spec
        self.name = name
        scale, zp = qparams_from_tensor(init, spec, name=name)
        if spec.symmetric:
            blocks = to_blocks(init.detach(), spec).float()  # (R, K)
            lsq = 2 * blocks.abs().mean(dim=1) / math.sqrt(spec.qmax)  # (R,)
            scale = lsq.reshape(scale.shape).clamp(min=EPS)
        self.scale = nn.Parameter(scale.clone())
        self.zero_point: torch.Tensor
        self.register_buffer("zero_point", zp.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize ``x`` (same shape and dtype) with the current learnable scale."""
        check_finite(x, self.name)
        blocks = to_blocks(x, self.spec).float()  # (R, K)
        g = 1.0 / math.sqrt(max(blocks.shape[1], 1) * self.spec.qmax)
        s = _grad_scale(self.scale, g).reshape(-1, 1).clamp(min=EPS)  # (R, 1)
        z = self.zero_point.float().reshape(-1, 1)  # (R, 1)
        v = (blocks / s + z).clamp(self.spec.qmin, self.spec.qmax)
        out = (_round_pass(v) - z) * s  # (R, K)
        return from_blocks(out, self.spec, x.shape).to(x.dtype)

    def extra_repr(self) -> str:
        s = self.spec
        return f"bits={s.bits}, signed={s.signed}, granularity={s.granularity}, name={self.name}"
