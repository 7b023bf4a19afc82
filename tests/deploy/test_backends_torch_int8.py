"""The ``torch_static_int8`` candidate: torch.ao FX static int8 on the x86 engine."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError
from torchshrink.core.zoo import create_zoo_model
from torchshrink.deploy.backends import BACKENDS, BuildContext, default_candidates, fx_int8_census

pytestmark = pytest.mark.skipif(
    "x86" not in torch.backends.quantized.supported_engines, reason="no x86 quantized engine"
)


def _calibration(digits: DataBundle, n: int = 4) -> tuple[torch.Tensor, ...]:
    return tuple(
        x for (x, _), _ in zip(digits.loader("train", batch_size=64), range(n), strict=False)
    )


def test_trained_cnn_runs_every_conv_and_linear_in_int8(
    digits_cnn: nn.Module, digits: DataBundle
) -> None:
    model = copy.deepcopy(digits_cnn).eval()
    x = digits.example_inputs(8)  # (8, 1, 8, 8)
    built = BACKENDS["torch_static_int8"](BuildContext(model, x, calibration=_calibration(digits)))
    # BN folded into the convs; every conv and linear runs int8. SmallCNN's functional
    # torch.relu is not fused by the x86 FX config: it runs in float between dequantize and
    # quantize, and the census must say so
    assert built.low_precision == {"Conv2d": 2, "Linear": 2, "MaxPool2d": 1}
    assert built.float_ops == {"flatten": 1, "relu": 3}
    agree, correct, ref_correct, n = 0, 0, 0, 0
    with torch.no_grad():
        for xb, yb in digits.loader("test", batch_size=128):
            ref, out = model(xb), built.run(xb)
            assert out.dtype == torch.float32 and out.shape == ref.shape
            agree += int((ref.argmax(1) == out.argmax(1)).sum())
            correct += int((out.argmax(1) == yb).sum())
            ref_correct += int((ref.argmax(1) == yb).sum())
            n += xb.shape[0]
    assert agree / n >= 0.97
    assert correct / n >= ref_correct / n - 0.02


def test_resnet_residual_adds_run_as_int8_add_relu(digits: DataBundle) -> None:
    torch.manual_seed(0)
    model = create_zoo_model("resnet20", in_channels=1, input_size=8).eval()
    x = digits.example_inputs(4)
    built = BACKENDS["torch_static_int8"](
        BuildContext(model, x, calibration=_calibration(digits, 2))
    )
    assert built.low_precision["add_relu"] == 9
    assert built.low_precision["Conv2d"] + built.low_precision["ConvReLU2d"] == 19
    assert "Conv2d" not in built.float_ops and "Linear" not in built.float_ops
    with torch.no_grad():
        ref, out = model(x), built.run(x)
    assert float((ref - out).abs().max()) <= 0.1 * float(ref.abs().max()) + 1e-3


def test_census_counts_float_modules_of_a_plain_graph() -> None:
    gm = torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten()))
    assert fx_int8_census(gm, (torch.randn(1, 1, 5, 5),)) == (
        {},
        {"Conv2d": 1, "Flatten": 1, "ReLU": 1},
    )


def test_needs_calibration_and_positional_inputs() -> None:
    net = nn.Sequential(nn.Linear(4, 2)).eval()
    with pytest.raises(ConfigError, match="needs calibration batches"):
        BACKENDS["torch_static_int8"](BuildContext(net, torch.randn(1, 4)))
    with pytest.raises(ConfigError, match="positional inputs only"):
        BACKENDS["torch_static_int8"](
            BuildContext(net, {"x": torch.randn(1, 4)}, calibration=(torch.randn(2, 4),))
        )
    assert "torch_static_int8" in default_candidates(calibration=True)
    assert "torch_static_int8" not in default_candidates(calibration=False)
