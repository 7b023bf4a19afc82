"""Empirical bias correction on a trained CNN with 4-bit per-tensor weights."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import torchshrink
from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError, EmptyDataError
from torchshrink.quantize.bias_correct import correct_bias, error_sum
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.ptq import quantize
from torchshrink.quantize.qmodules import QuantLayer
from torchshrink.quantize.spec import QuantSpec

LAYERS = ("conv1", "conv2", "fc1", "fc2")


def _data(digits: DataBundle) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    xs = torch.cat([x for x, _ in digits.loader("test", batch_size=512)])  # (359, 1, 8, 8)
    ys = torch.cat([y for _, y in digits.loader("test", batch_size=512)])  # (359,)
    train = torch.cat([x for x, _ in digits.loader("train", batch_size=512)])
    return xs, ys, list(train[:512].split(64))


def _layer_bias_error(model: nn.Module, reference: nn.Module, name: str, x: torch.Tensor) -> float:
    """Mean over channels of |mean output error| of one quant layer on the float input."""
    seen: list[torch.Tensor] = []
    h = model.get_submodule(name).register_forward_pre_hook(lambda _m, a: seen.append(a[0]))
    with torch.no_grad():
        model(x)
    h.remove()
    layer, ref = model.get_submodule(name), reference.get_submodule(name)
    assert isinstance(layer, QuantLayer) and isinstance(ref, QuantLayer)
    with torch.no_grad():
        # float weight and float bias of the *uncorrected* layer as the reference
        diff = layer(seen[0]) - ref.module(seen[0])  # (B, C) or (B, C, H, W)
    dims = (0, 2, 3) if diff.dim() == 4 else (0,)
    return float(diff.mean(dim=dims).abs().mean())


@pytest.fixture(scope="module")
def trained(digits_cnn: nn.Module) -> nn.Module:
    return copy.deepcopy(digits_cnn)


@pytest.mark.parametrize("bits", [4, 3])
def test_mean_error_shrinks_and_accuracy_holds(
    trained: nn.Module, digits: DataBundle, bits: int
) -> None:
    xs, ys, calib = _data(digits)
    q = quantize(trained, QuantConfig(scheme="w4", weight=QuantSpec(bits=bits)))
    fixed = correct_bias(trained, q, calib)
    for name in LAYERS:  # held-out images, inputs from the quantized model: > 5x smaller
        before = _layer_bias_error(q, q, name, xs)
        after = _layer_bias_error(fixed, q, name, xs)
        assert after < 0.2 * before, (name, after, before)
    with torch.no_grad():
        ref, out_q, out_c = trained(xs), q(xs), fixed(xs)
    # end to end: the mean logit error per class more than halves, the overall error drops
    assert (out_c - ref).mean(0).abs().mean() < 0.5 * (out_q - ref).mean(0).abs().mean()
    assert (out_c - ref).norm() < 0.8 * (out_q - ref).norm()
    acc_q = float((out_q.argmax(1) == ys).float().mean())
    acc_c = float((out_c.argmax(1) == ys).float().mean())
    # 4 bits: within one test image (the two differ by exactly one of 359); 3 bits: better
    assert acc_c >= acc_q - (1.5 / len(ys) if bits == 4 else 0.0), (acc_c, acc_q)


def test_static_int32_bias_and_save_load(
    trained: nn.Module, digits: DataBundle, tmp_path: Path
) -> None:
    xs, _, calib = _data(digits)
    cfg = QuantConfig(scheme="w8a8", weight=QuantSpec(bits=4), calibration_size=256)
    q = quantize(trained, cfg, calibration=calib)
    fixed = correct_bias(trained, q, calib, max_batches=4)
    layer = fixed.fc1
    assert layer.bias_is_quantized
    # the shift went into the float bias before the int32 rounding: the codes carry it
    codes = layer.effective_bias() / layer.bias_scale()
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert not torch.allclose(layer.effective_bias(), q.fc1.effective_bias())
    with torch.no_grad():
        ref = trained(xs)
        assert (fixed(xs) - ref).mean(0).abs().mean() < (q(xs) - ref).mean(0).abs().mean()
    model = torchshrink.load_model("zoo:lenet5")
    lenet_q = correct_bias(
        model, quantize(model, QuantConfig(scheme="w4")), torch.randn(8, 1, 28, 28)
    )
    back = torchshrink.load(torchshrink.save(lenet_q, tmp_path / "q.safetensors"))
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(back(x), lenet_q(x), atol=1e-5)


def test_error_sum_and_errors() -> None:
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1))
    q = quantize(net, QuantConfig(scheme="w4"))
    total, count = error_sum(q[0], torch.randn(2, 2, 5, 5))
    assert total.shape == (3,) and count == 2 * 5 * 5
    lin = nn.Sequential(nn.Linear(4, 3, bias=False))
    fixed = correct_bias(lin, quantize(lin, QuantConfig(scheme="w4")), torch.randn(16, 4) + 1)
    assert fixed[0].module.bias is not None and fixed[0].module.bias.shape == (3,)  # created
    with pytest.raises(ConfigError, match="no QuantLinear / QuantConv2d"):
        correct_bias(net, net, torch.randn(1, 2, 4, 4))
    with pytest.raises(EmptyDataError, match="no batch"):
        correct_bias(net, q, [])
    with pytest.raises(ConfigError, match="max_batches must be >= 1"):
        correct_bias(net, q, torch.randn(1, 2, 4, 4), max_batches=0)
