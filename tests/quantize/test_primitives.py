"""Uniform primitives: qparams, quantize / dequantize bounds, granularity, STE, edge inputs."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchshrink.core.errors import ConfigError
from torchshrink.quantize import (
    QuantSpec,
    compute_qparams,
    dequantize,
    fake_quantize,
    qparams_from_tensor,
    quantize,
)

SPECS = [
    QuantSpec.preset("int8"),
    QuantSpec.preset("uint8"),
    QuantSpec.preset("int8c"),
    QuantSpec.preset("int4g32"),
    QuantSpec(bits=8, signed=False, symmetric=True),
    QuantSpec(bits=2, symmetric=False, granularity="per_channel"),
    QuantSpec(bits=16, granularity="per_channel", axis=1),
]


def _roundtrip(x: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    scale, zp = qparams_from_tensor(x, spec)
    return dequantize(quantize(x, scale, zp, spec), scale, zp, spec), scale


def test_int8_symmetric_per_channel_error_at_most_half_scale() -> None:
    spec = QuantSpec(bits=8, granularity="per_channel")
    w = torch.randn(16, 64) * torch.logspace(-3, 2, 16)[:, None]  # (16, 64) mixed magnitudes
    deq, scale = _roundtrip(w, spec)
    assert scale.shape == (16,)
    bound = scale[:, None] / 2 * (1 + 1e-4)  # float32 slack; the bound is reached at max|w|
    assert bool(((deq - w).abs() <= bound).all())


def test_asymmetric_uint8_error_bound_and_zero_exact() -> None:
    spec = QuantSpec.preset("uint8")
    x = torch.rand(1000) * 5 - 1  # [-1, 4)
    scale, zp = qparams_from_tensor(x, spec)
    deq = dequantize(quantize(x, scale, zp, spec), scale, zp, spec)
    assert float((deq - x).abs().max()) <= float(scale) / 2 * (1 + 1e-4)
    zero = torch.zeros(1)
    assert float(dequantize(quantize(zero, scale, zp, spec), scale, zp, spec)) == 0.0


def test_compute_qparams_values() -> None:
    s, zp = compute_qparams(torch.tensor(-2.0), torch.tensor(1.0), QuantSpec(bits=8))
    assert float(s) == pytest.approx(2 / 127.5) and int(zp) == 0
    s, zp = compute_qparams(torch.tensor(0.5), torch.tensor(2.0), QuantSpec.preset("uint8"))
    # range widened to contain 0: [0, 2]
    assert float(s) == pytest.approx(2 / 255) and int(zp) == 0
    s, zp = compute_qparams(torch.tensor(-3.0), torch.tensor(3.0), QuantSpec(bits=8, signed=False))
    assert int(zp) == 128 and float(s) == pytest.approx(6 / 255)


def test_per_group_beats_per_tensor_on_outlier_groups() -> None:
    x = torch.randn(8, 256) * 0.01  # (8, 256)
    x[::2, :32] *= 1000  # an outlier group in every other row
    normal = torch.ones_like(x, dtype=torch.bool)
    normal[::2, :32] = False
    mse, mse_normal = {}, {}
    for name, spec in [
        ("tensor", QuantSpec(bits=4)),
        ("channel", QuantSpec(bits=4, granularity="per_channel")),
        ("group", QuantSpec.preset("int4g32")),
    ]:
        deq, _ = _roundtrip(x, spec)
        mse[name] = float(((deq - x) ** 2).mean())
        mse_normal[name] = float(((deq - x)[normal] ** 2).mean())
    assert mse["group"] < mse["channel"] < mse["tensor"]
    # Per-tensor flushes the normal groups to 0 (MSE ~ their variance 1e-4); per-group keeps them.
    assert mse_normal["tensor"] == pytest.approx(1e-4, rel=0.2)
    assert mse_normal["group"] < mse_normal["tensor"] / 100


def test_per_group_conv_weight_shapes_and_bad_group() -> None:
    spec = QuantSpec(bits=4, granularity="per_group", group_size=9)
    w = torch.randn(6, 4, 3, 3)  # in * kh * kw = 36 = 4 groups of 9
    deq, scale = _roundtrip(w, spec)
    assert scale.shape == (6, 4) and deq.shape == w.shape
    with pytest.raises(ConfigError, match=r"group_size=10 does not divide the input dim 36"):
        qparams_from_tensor(w, QuantSpec(bits=4, granularity="per_group", group_size=10))


def test_per_channel_activation_axis() -> None:
    spec = QuantSpec(bits=8, granularity="per_channel", axis=1)
    x = torch.randn(2, 3, 4, 4) * torch.tensor([1.0, 10.0, 100.0])[None, :, None, None]
    _, scale = _roundtrip(x, spec)
    assert scale.shape == (3,)
    assert float(scale[2] / scale[0]) > 30
    with pytest.raises(ConfigError, match="axis=4 is out of range"):
        qparams_from_tensor(x, QuantSpec(granularity="per_channel", axis=4))


def test_scale_count_mismatch_is_clear() -> None:
    spec = QuantSpec(bits=8, granularity="per_channel")
    with pytest.raises(ConfigError, match="scale has 3 entries"):
        quantize(torch.randn(4, 2), torch.ones(3), torch.zeros(3), spec)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_input_raises_naming_tensor(bad: float) -> None:
    x = torch.tensor([1.0, bad])
    kind = "NaN" if bad != bad else "Inf"
    with pytest.raises(ConfigError, match=f"fc1.weight contains {kind}"):
        quantize(x, torch.tensor(0.1), torch.tensor(0), QuantSpec(), name="fc1.weight")
    with pytest.raises(ConfigError, match=f"act contains {kind}"):
        qparams_from_tensor(x, QuantSpec(), name="act")
    with pytest.raises(ConfigError, match=kind):
        fake_quantize(x, torch.tensor(0.1), torch.tensor(0), QuantSpec())


EDGE_INPUTS = {
    "zeros": torch.zeros(4, 32),
    "constant": torch.full((4, 32), 3.5),
    "zero_channel": torch.cat([torch.zeros(1, 32), torch.randn(3, 32)]),
    "single": torch.tensor([[0.7]]),
    "huge": torch.tensor([[3e38, -3e38, 1.0, 0.0]]),
    "tiny": torch.tensor([[1e-38, -1e-40, 1e-30, 0.0]]),
}


@pytest.mark.parametrize("case", sorted(EDGE_INPUTS))
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.bits}{s.granularity}{s.symmetric}")
def test_edge_inputs_stay_finite(case: str, spec: QuantSpec) -> None:
    x = EDGE_INPUTS[case]
    if spec.granularity == "per_group" and x.shape[1] % 32:
        spec = spec.model_copy(update={"group_size": x.shape[1]})
    if spec.granularity == "per_channel" and spec.axis == 1 and x.dim() < 2:
        pytest.skip("no axis 1")
    deq, scale = _roundtrip(x, spec)
    assert bool(torch.isfinite(deq).all()) and bool(torch.isfinite(scale).all())
    assert float(scale.min()) >= torch.finfo(torch.float32).eps
    fq = fake_quantize(x, *qparams_from_tensor(x, spec), spec)
    assert bool(torch.isfinite(fq).all())
    if case in ("zeros", "zero_channel"):
        assert float(deq[0].abs().max()) == 0.0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=64),
    st.sampled_from([2, 3, 4, 8, 16]),
    st.booleans(),
)
def test_property_roundtrip_within_half_scale(vals: list[float], bits: int, sym: bool) -> None:
    x = torch.tensor(vals)
    spec = QuantSpec(bits=bits, symmetric=sym, signed=sym)
    deq, scale = _roundtrip(x, spec)
    assert bool(torch.isfinite(deq).all())
    tol = float(scale) / 2 * (1 + 1e-4) + 1e-6 * float(x.abs().max())
    assert float((deq - x).abs().max()) <= tol


def test_rounding_modes() -> None:
    x = torch.full((20_000,), 0.3)
    s, zp = torch.tensor(1.0), torch.tensor(0)
    assert int(quantize(x, s, zp, QuantSpec(rounding="floor")).sum()) == 0
    assert int(quantize(torch.tensor([0.7]), s, zp, QuantSpec(rounding="nearest"))) == 1
    g = torch.Generator().manual_seed(0)
    q = quantize(x, s, zp, QuantSpec(rounding="stochastic"), generator=g)
    assert float(q.float().mean()) == pytest.approx(0.3, abs=0.02)  # unbiased
    g2 = torch.Generator().manual_seed(0)
    q2 = quantize(x, s, zp, QuantSpec(rounding="stochastic"), generator=g2)
    assert torch.equal(q, q2)


def test_fake_quantize_ste_gradient_one_inside_zero_outside() -> None:
    spec = QuantSpec(bits=8)  # codes -128..127
    scale, zp = torch.tensor(0.01), torch.tensor(0)
    x = torch.tensor([-2.0, -1.2, -0.5, 0.0, 0.333, 1.2, 1.27, 5.0], requires_grad=True)
    out = fake_quantize(x, scale, zp, spec)
    out.backward(torch.ones_like(out))
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    ref = dequantize(quantize(x.detach(), scale, zp, spec), scale, zp, spec)
    assert torch.equal(out.detach(), ref)


def test_fake_quantize_per_channel_grad_shape() -> None:
    spec = QuantSpec(bits=4, granularity="per_channel")
    w = torch.randn(3, 10, requires_grad=True)
    scale, zp = qparams_from_tensor(w, spec)
    fake_quantize(w, scale * 0.5, zp, spec).sum().backward()
    assert w.grad.shape == (3, 10)
    frac_inside = float(w.grad.mean())
    assert 0.3 < frac_inside < 1.0  # halving the scale clips the tails
