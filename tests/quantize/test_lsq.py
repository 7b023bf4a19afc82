"""LSQ learnable-scale fake quantizer: forward values, gradient scale, and that it trains."""

from __future__ import annotations

import math

import pytest
import torch

from torchshrink.core.errors import ConfigError
from torchshrink.quantize import LSQFakeQuant, QuantSpec


def test_init_and_forward_are_quantized_levels() -> None:
    w = torch.randn(4, 32)
    fq = LSQFakeQuant(QuantSpec(bits=4, granularity="per_channel"), w, name="fc.weight")
    expected = 2 * w.abs().mean(dim=1) / math.sqrt(7)
    assert torch.allclose(fq.scale.detach(), expected)
    out = fq(w)
    codes = out.detach() / fq.scale.detach()[:, None]
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert float(codes.min()) >= -8 and float(codes.max()) <= 7


def test_lsq_gradients() -> None:
    spec = QuantSpec(bits=8)
    fq = LSQFakeQuant(spec, torch.ones(10))
    with torch.no_grad():
        fq.scale.fill_(0.1)
    x = torch.tensor([0.26, 100.0, -100.0], requires_grad=True)  # inside, clipped high, low
    fq(x).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 0.0]
    g = 1 / math.sqrt(3 * 127)
    # LSQ: d/ds = round(x/s) - x/s inside, qmax and qmin where clipped
    expected = ((3 - 2.6) + 127 + (-128)) * g
    assert float(fq.scale.grad) == pytest.approx(expected, rel=1e-4)


def test_lsq_trains_scale_and_reduces_loss() -> None:
    torch.manual_seed(0)
    x = torch.randn(512) * 0.5
    fq = LSQFakeQuant(QuantSpec(bits=3), x)
    with torch.no_grad():
        fq.scale.mul_(4.0)  # start far too coarse
    start = float(fq.scale.detach())
    opt = torch.optim.Adam(fq.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = ((fq(x) - x) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert float(fq.scale.detach()) < start * 0.6
    assert losses[-1] < losses[0] / 3


def test_nan_input_raises() -> None:
    fq = LSQFakeQuant(QuantSpec(bits=8), torch.ones(3), name="act1")
    with pytest.raises(ConfigError, match="act1 contains NaN"):
        fq(torch.tensor([float("nan")]))
    with pytest.raises(ConfigError, match="w contains NaN"):
        LSQFakeQuant(QuantSpec(bits=8), torch.tensor([float("nan")]), name="w")


def test_all_zero_init_stays_finite() -> None:
    fq = LSQFakeQuant(QuantSpec(bits=4, granularity="per_channel"), torch.zeros(3, 5))
    out = fq(torch.zeros(3, 5))
    assert bool(torch.isfinite(fq.scale).all()) and float(out.detach().abs().sum()) == 0.0
    assert float(fq.scale.detach().min()) > 0


def test_lsq_forward_is_exactly_round_to_nearest_at_the_scale() -> None:
    # A min-max scale puts each channel's extreme weight exactly on a rounding tie; a forward
    # value one ulp off the scale would pick another level than the converted integer layer.
    from torchshrink.quantize.lsq import _grad_scale, _round_pass

    x = torch.tensor([0.1, 0.7, 1.3, 2.5, -3.3], requires_grad=True)
    for g in (0.37, 1e-3, 0.5):
        assert torch.equal(_grad_scale(x, g), x.detach())
    assert torch.equal(_round_pass(x * 10.0), torch.round(x.detach() * 10.0))
    _grad_scale(x, 0.25).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 0.25))
