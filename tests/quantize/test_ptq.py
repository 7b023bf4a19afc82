"""Post-training quantization on a real trained CNN (sklearn digits) and its error paths."""

from __future__ import annotations

import copy
from pathlib import Path

import pydantic
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from testmodels import SmallCNN
from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError, EmptyDataError, UnsupportedLayerError
from torchshrink.measure.accuracy import evaluate
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.ptq import get_quant_report, quantize
from torchshrink.quantize.qmodules import QuantConv2d, QuantLinear
from torchshrink.quantize.spec import QuantSpec


@pytest.fixture(scope="module")
def trained(digits_cnn: nn.Module) -> nn.Module:
    return copy.deepcopy(digits_cnn)


@pytest.fixture(scope="module")
def fp32_acc(trained: nn.Module, digits: DataBundle) -> float:
    acc = evaluate(trained, digits.test).accuracy
    assert acc > 0.95  # the model really learned; otherwise the comparisons mean nothing
    return acc


def test_static_int8_keeps_accuracy(
    trained: nn.Module, digits: DataBundle, fp32_acc: float
) -> None:
    q = quantize(trained, QuantConfig.preset("w8a8", calibration_size=256), calibration=digits)
    acc = evaluate(q, digits.test).accuracy
    assert acc >= fp32_acc - 0.015
    report = get_quant_report(q)
    assert report is not None
    assert (report.num_quantized, report.folded_bn, report.calibration_samples) == (4, 2, 256)
    assert isinstance(q.conv1, QuantConv2d) and isinstance(q.fc2, QuantLinear)
    assert q.conv1.weight_q.dtype == torch.int8 and q.conv1.weight_scale.shape == (8,)
    assert float(q.fc1.input_scale) > 0
    # the input model is untouched
    assert type(trained.conv1) is nn.Conv2d and isinstance(trained.bn1, nn.BatchNorm2d)


@pytest.mark.parametrize("scheme, tolerance", [("w8a8_dynamic", 0.015), ("w8", 0.01), ("w4", 0.05)])
def test_other_schemes_keep_accuracy(
    trained: nn.Module, digits: DataBundle, fp32_acc: float, scheme: str, tolerance: float
) -> None:
    q = quantize(trained, QuantConfig.preset(scheme))
    assert evaluate(q, digits.test).accuracy >= fp32_acc - tolerance
    bits = QuantConfig.preset(scheme).weight.bits
    assert int(q.conv2.weight_q.abs().max()) <= 2 ** (bits - 1)


@pytest.mark.parametrize("observer", ["percentile", "mse"])
def test_clipping_observers_calibrate(
    trained: nn.Module, digits: DataBundle, observer: str
) -> None:
    minmax = quantize(trained, QuantConfig(calibration_size=32), calibration=digits)
    clipped = quantize(
        trained, QuantConfig(observer=observer, calibration_size=32), calibration=digits
    )
    # a clipping observer never widens the range min-max found
    assert float(clipped.fc1.input_scale) <= float(minmax.fc1.input_scale) * (1 + 1e-6)
    assert evaluate(clipped, digits.test).accuracy > 0.9


def test_calibration_forms_give_the_same_scales(trained: nn.Module, digits: DataBundle) -> None:
    x = torch.stack([digits.train[i][0] for i in range(96)])  # (96, 1, 8, 8)
    y = torch.zeros(96, dtype=torch.long)
    cfg = QuantConfig(calibration_size=96, batch_size=32)
    forms = [
        x,
        [x[:50], x[50:]],
        TensorDataset(x, y),
        DataLoader(TensorDataset(x, y), batch_size=40),
        [(x[:10], y[:10]), (x[10:], y[10:])],
        [{"x": x}],
    ]
    scales = [float(quantize(trained, cfg, calibration=f).conv2.input_scale) for f in forms]
    assert scales == pytest.approx([scales[0]] * len(forms), rel=1e-6)


def test_calibration_size_caps_samples(trained: nn.Module) -> None:
    batches = [torch.randn(40, 1, 8, 8) for _ in range(5)]
    q = quantize(trained, QuantConfig(calibration_size=50), calibration=batches)
    report = get_quant_report(q)
    assert report is not None and report.calibration_samples == 50


@pytest.mark.parametrize(
    "empty", [[], [torch.empty(0, 1, 8, 8)], TensorDataset(torch.empty(0, 1, 8, 8))]
)
def test_empty_calibration_raises(trained: nn.Module, empty: object) -> None:
    with pytest.raises(EmptyDataError, match="calibration"):
        quantize(trained, QuantConfig.preset("w8a8"), calibration=empty)


def test_missing_calibration_for_static_raises(trained: nn.Module) -> None:
    with pytest.raises(EmptyDataError, match="needs calibration data"):
        quantize(trained, QuantConfig.preset("w8a8"))


def test_nan_weight_is_named(trained: nn.Module) -> None:
    broken = SmallCNN()
    broken.load_state_dict(trained.state_dict())
    with torch.no_grad():
        broken.fc1.weight[3, 5] = float("nan")
    with pytest.raises(ConfigError, match=r"fc1\.weight contains NaN"):
        quantize(broken, QuantConfig.preset("w8"))


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.conv1d = nn.Conv1d(8, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.emb(tokens)  # (B, T, 8)
        h = self.conv1d(h.transpose(1, 2)).transpose(1, 2)  # (B, T, 8)
        return self.head(self.norm(h).mean(1))  # (B, 3)


def test_unsupported_layers_are_named() -> None:
    with pytest.raises(UnsupportedLayerError, match=r"emb \(Embedding\), conv1d \(Conv1d\)"):
        quantize(_Mixed(), QuantConfig.preset("w8"))


def test_ignored_unsupported_layers_stay_float() -> None:
    model = _Mixed().eval()
    tokens = torch.randint(0, 20, (4, 6))
    cfg = QuantConfig(ignore=("emb", "conv.*"), calibration_size=4)
    q = quantize(model, cfg, calibration=[tokens])
    assert type(q.emb) is nn.Embedding and type(q.conv1d) is nn.Conv1d
    assert isinstance(q.head, QuantLinear)
    report = get_quant_report(q)
    assert report is not None and report.float_layers == ["emb", "conv1d"]
    assert (q(tokens) - model(tokens)).abs().max() < 0.1


def test_overrides_float_and_int4(trained: nn.Module, digits: DataBundle) -> None:
    cfg = QuantConfig(overrides={"fc2": "float", "conv.*": "int4"}, calibration_size=64)
    q = quantize(trained, cfg, calibration=digits)
    assert type(q.fc2) is nn.Linear
    assert isinstance(q.conv1, QuantConv2d) and int(q.conv1.weight_q.max()) <= 7
    assert int(q.fc1.weight_q.abs().max()) > 7  # the default int8 spec elsewhere


class _Unused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = nn.Linear(4, 4)
        self.spare = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_layer_not_reached_by_calibration_stays_float() -> None:
    q = quantize(_Unused(), QuantConfig(), calibration=[torch.randn(8, 4)])
    assert isinstance(q.used, QuantLinear) and type(q.spare) is nn.Linear
    report = get_quant_report(q)
    assert report is not None
    assert [r.reason for r in report.layers if r.name == "spare"] == [
        "not reached by the calibration data"
    ]


def test_bits_out_of_range_and_bad_config() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"bits must be 2\.\.8 or 16, got 9"):
        QuantConfig(weight={"bits": 9})
    with pytest.raises(ConfigError, match=r"bits must be 2\.\.8 or 16, got 1"):
        QuantConfig.preset("w8a8", activation={"bits": 1})
    with pytest.raises(ConfigError, match="unknown scheme 'int3'"):
        QuantConfig.preset("int3")
    with pytest.raises(pydantic.ValidationError, match="unknown observer 'median'"):
        QuantConfig(observer="median")
    with pytest.raises(pydantic.ValidationError, match="weight_only' takes activation=None"):
        QuantConfig(scheme="w8", activation=QuantSpec.preset("uint8"))
    with pytest.raises(
        pydantic.ValidationError, match=r"activation\.granularity must be 'per_tensor'"
    ):
        QuantConfig(activation=QuantSpec.preset("int8c"))


def test_config_round_trips_json() -> None:
    cfg = QuantConfig(
        scheme="w4g128", overrides={"fc.*": "int8c", "head": "float"}, ignore=("emb",)
    )
    again = QuantConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg
    assert again.weight_spec_for("fc1") == QuantSpec.preset("int8c")
    assert again.weight_spec_for("head") is None
    assert again.weight_spec_for("conv").group_size == 128  # type: ignore[union-attr]


@pytest.mark.parametrize("scheme", ["w8a8", "w8a8_dynamic", "w4"])
def test_quantized_model_file_loads_in_a_fresh_process(
    scheme: str, digits: DataBundle, tmp_path: Path
) -> None:
    import subprocess
    import sys

    import torchshrink

    torch.manual_seed(0)
    model = torchshrink.load_model("zoo:resnet20", model_args={"in_channels": 1, "input_size": 8})
    q = quantize(model, QuantConfig.preset(scheme, calibration_size=128), calibration=digits)
    x = digits.example_inputs(8)
    with torch.no_grad():
        y = q(x)
    path = torchshrink.save(q, tmp_path / "q.safetensors")
    torch.save({"x": x, "y": y}, tmp_path / "io.pt")
    code = (
        "import torch, torchshrink; "
        f"m = torchshrink.load(r'{path}'); io = torch.load(r'{tmp_path / 'io.pt'}', weights_only=True); "
        "torch.testing.assert_close(m(io['x']), io['y'], rtol=0, atol=0); "
        "c = m.layer1[0].conv1; print(type(c).__name__, c.mode, c.weight_spec.bits, c.weight_q.dtype)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1500:]
    mode = {"w8a8": "static", "w8a8_dynamic": "dynamic", "w4": "weight_only"}[scheme]
    bits = 4 if scheme == "w4" else 8
    assert out.stdout.split()[:3] == ["QuantConv2d", mode, str(bits)]


def test_int8_model_file_is_about_a_quarter_of_float(digits: DataBundle, tmp_path: Path) -> None:
    import torchshrink

    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    float_bytes = torchshrink.save(model, tmp_path / "f.safetensors").stat().st_size
    q = quantize(model, QuantConfig.preset("w8a8", calibration_size=64), calibration=digits)
    assert "fc1.module.weight" not in q.state_dict()  # derivable from the int8 codes
    int8_bytes = torchshrink.save(q, tmp_path / "q.safetensors").stat().st_size
    # 50,200 int8 weights + fp32 biases, per-channel scales and the JSON header
    assert 0.25 < int8_bytes / float_bytes < 0.32
    back = torchshrink.load(tmp_path / "q.safetensors")
    torch.testing.assert_close(back.fc1.module.weight, q.fc1.dequantized_weight(), rtol=0, atol=0)
