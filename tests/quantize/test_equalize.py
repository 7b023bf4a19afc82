"""Cross-layer equalization: same float function, equal channel ranges, lower per-tensor error."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.equalize import (
    equalize_cross_layer,
    equalize_pair,
    find_equalization_pairs,
    weight_channel_ranges,
)
from torchshrink.quantize.fold import fold_bn
from torchshrink.quantize.ptq import quantize
from torchshrink.quantize.spec import QuantSpec

# Per-tensor weights and activations: the setting where uneven channels hurt.
PER_TENSOR = QuantConfig(scheme="w8a8", weight=QuantSpec(bits=8))


class DepthwiseNet(nn.Module):
    """A MobileNet-like chain (conv-BN-ReLU, depthwise-ReLU, 1x1) with a residual at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 8, 1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))  # (B, 16, H, W)
        x = nn.functional.relu(self.dw(x))  # (B, 16, H, W)
        y = torch.relu(self.pw(x))  # (B, 8, H, W): also read by the residual sum
        x = self.conv2(y) + y  # (B, 8, H, W)
        return self.fc(x.mean(dim=(2, 3)))  # (B, 10)


def _relative_error(model: nn.Module, reference: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        ref = reference(x)
        return float((model(x) - ref).norm() / ref.norm())


def _unbalance(first: nn.Module, second: nn.Module, factors: torch.Tensor) -> None:
    # The inverse of equalization: same float function, channel ranges spread by `factors`.
    equalize_pair(first, second)  # start from balanced ranges
    with torch.no_grad():
        first.weight.mul_(factors.reshape(-1, *([1] * (first.weight.dim() - 1))))
        if first.bias is not None:
            first.bias.mul_(factors)
        second.weight.div_(factors.reshape(1, -1, *([1] * (second.weight.dim() - 2))))


def test_pairs_skip_residual_branch_and_bn_is_folded() -> None:
    net = DepthwiseNet().eval()
    x = torch.randn(2, 3, 8, 8)
    # BN between conv and ReLU: not a pair until folded; pw's output also feeds the sum.
    assert find_equalization_pairs(net, x) == [("dw", "pw")]
    eq = equalize_cross_layer(net, x)
    assert find_equalization_pairs(eq, x) == [("conv", "dw"), ("dw", "pw")]


def test_outputs_unchanged_and_ranges_equal() -> None:
    net = DepthwiseNet().eval()
    with torch.no_grad():
        net.bn.running_var.uniform_(0.05, 4.0)
        net.bn.weight.uniform_(0.1, 3.0)
    x = torch.randn(4, 3, 8, 8)
    eq = equalize_cross_layer(net, x, iterations=50, tolerance=1e-6)
    with torch.no_grad():
        assert torch.allclose(eq(x), net(x), atol=1e-5)
    for first, second in [("conv", "dw"), ("dw", "pw")]:
        out_r, _ = weight_channel_ranges(eq.get_submodule(first))
        _, in_r = weight_channel_ranges(eq.get_submodule(second))
        assert torch.allclose(out_r, in_r, rtol=1e-3), (first, second)
    # The BN gains made the folded conv's channels uneven; sharing with dw evens them out.
    folded = weight_channel_ranges(fold_bn(net).conv)[0]
    after = weight_channel_ranges(eq.conv)[0]
    assert after.max() / after.min() < 0.5 * folded.max() / folded.min()
    assert isinstance(net.bn, nn.BatchNorm2d)  # the original is not changed


def test_imbalanced_mlp_per_tensor_int8_error_drops() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)
    )
    factors = torch.logspace(-1.5, 1.5, 64)[torch.randperm(64)]  # ranges 0.03x .. 30x
    _unbalance(mlp[0], mlp[2], factors)
    _unbalance(mlp[2], mlp[4], factors[torch.randperm(64)])
    x = torch.randn(256, 16)
    eq = equalize_cross_layer(mlp, x[:2])
    with torch.no_grad():
        assert torch.allclose(eq(x), mlp(x), atol=1e-4)
    plain = quantize(mlp, PER_TENSOR, calibration=x[:128])
    equalized = quantize(eq, PER_TENSOR, calibration=x[:128])
    err_plain = _relative_error(plain, mlp, x[128:])
    err_eq = _relative_error(equalized, mlp, x[128:])
    assert err_eq < 0.3 * err_plain, (err_eq, err_plain)


def test_trained_digits_cnn_per_tensor_error_drops(
    digits_cnn: nn.Module, digits: DataBundle
) -> None:
    model = copy.deepcopy(digits_cnn)
    xs = torch.cat([x for x, _ in digits.loader("test", batch_size=512)])  # (359, 1, 8, 8)
    calib = torch.cat([x for x, _ in digits.loader("train", batch_size=256)])[:256]
    eq = equalize_cross_layer(model, xs[:2])
    with torch.no_grad():
        assert torch.allclose(eq(xs), model(xs), atol=1e-4)
    err_plain = _relative_error(quantize(model, PER_TENSOR, calibration=calib), model, xs)
    err_eq = _relative_error(quantize(eq, PER_TENSOR, calibration=calib), model, xs)
    assert err_eq < 0.9 * err_plain, (err_eq, err_plain)


def test_bad_iterations() -> None:
    with pytest.raises(ConfigError, match="iterations must be >= 1, got 0"):
        equalize_cross_layer(nn.Linear(2, 2), torch.zeros(1, 2), iterations=0)
