"""ONNX export (float and QDQ int8) and ONNX Runtime execution, against the PyTorch simulation."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError, ModelFileError, ShapeError, UnsupportedLayerError
from torchshrink.core.zoo import create_zoo_model
from torchshrink.deploy.onnx_export import export_onnx
from torchshrink.deploy.ort_session import OrtSession
from torchshrink.measure.accuracy import evaluate
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.ptq import quantize
from torchshrink.quantize.residual import get_output_qparams

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def test_x(digits: DataBundle) -> torch.Tensor:
    return torch.stack([digits.test[i][0] for i in range(len(digits.test))])  # (359, 1, 8, 8)


@pytest.fixture(scope="module")
def trained(digits_cnn: nn.Module) -> nn.Module:
    return copy.deepcopy(digits_cnn)


@pytest.fixture(scope="module")
def static_q(trained: nn.Module, digits: DataBundle) -> nn.Module:
    return quantize(trained, QuantConfig.preset("w8a8", calibration_size=256), calibration=digits)


def test_qdq_model_agrees_with_simulation_and_runs_int8(
    static_q: nn.Module,
    trained: nn.Module,
    digits: DataBundle,
    test_x: torch.Tensor,
    tmp_path: Path,
) -> None:
    result = export_onnx(static_q, tmp_path / "q.onnx", example_inputs=test_x[:1])
    assert result.int8_layers == ("conv1", "conv2", "fc1", "fc2")
    # fc2's output is the logits: it stays float, every other output is quantized for fusion
    assert result.output_qdq == ("conv1", "conv2", "fc1")
    sess = OrtSession(result.path, threads=1)
    sim = static_q(test_x).detach()  # (359, 10)
    ort = sess.run(test_x)
    agreement = float((sim.argmax(1) == ort.argmax(1)).float().mean())
    assert agreement >= 0.99
    # Bound: 2% of the largest logit (integer kernels round their requantization on their own)
    assert float((sim - ort).abs().max()) <= 0.02 * float(sim.abs().max())
    report = sess.op_report()
    assert report.ops.get("QLinearConv") == 2 and report.ops.get("QGemm") == 2
    assert (report.int8_compute, report.float_compute) == (4, 0)
    assert report.int8_fraction == 1.0
    fp32 = evaluate(trained, digits.test).accuracy
    assert evaluate(sess.as_module(), digits.test).accuracy >= fp32 - 0.015


def test_float_export_matches_torch(
    trained: nn.Module, test_x: torch.Tensor, tmp_path: Path
) -> None:
    result = export_onnx(trained, tmp_path / "f.onnx", example_inputs=test_x[:2])
    assert (result.int8_layers, result.opset) == ((), 17)
    sess = OrtSession(result.path, threads=1)
    assert torch.allclose(sess.run(test_x[:64]), trained(test_x[:64]), atol=1e-4)
    report = sess.op_report()
    assert report.int8_compute == 0 and report.float_compute == 4


def test_dynamic_export_runs_integer_kernels(
    trained: nn.Module, test_x: torch.Tensor, tmp_path: Path
) -> None:
    q = quantize(trained, QuantConfig.preset("w8a8_dynamic"))
    result = export_onnx(q, tmp_path / "d.onnx", example_inputs=test_x[:1])
    sess = OrtSession(result.path, threads=1)
    sim, ort = q(test_x).detach(), sess.run(test_x)
    assert float((sim.argmax(1) == ort.argmax(1)).float().mean()) >= 0.99
    assert float((sim - ort).abs().max()) <= 0.02 * float(sim.abs().max())
    report = sess.op_report()
    assert report.ops.get("ConvInteger") == 2 and report.ops.get("DynamicQuantizeMatMul") == 2
    assert report.float_compute == 0


def test_weight_only_int4_export_equals_simulation(
    trained: nn.Module, test_x: torch.Tensor, tmp_path: Path
) -> None:
    q = quantize(trained, QuantConfig.preset("w4"))
    result = export_onnx(q, tmp_path / "w4.onnx", example_inputs=test_x[:1])
    assert result.weight_only_layers == ("conv1", "conv2", "fc1", "fc2")
    assert torch.allclose(OrtSession(result.path, threads=1).run(test_x), q(test_x), atol=1e-4)


def test_zoo_resnet20_exports_with_residuals(
    digits: DataBundle, test_x: torch.Tensor, tmp_path: Path
) -> None:
    model = create_zoo_model("resnet20", in_channels=1, input_size=8).eval()
    q = quantize(model, QuantConfig(calibration_size=64), calibration=digits)
    result = export_onnx(q, tmp_path / "r.onnx", example_inputs=test_x[:1])
    assert len(result.int8_layers) == 20  # 19 convs + fc, BatchNorms folded away
    sess = OrtSession(result.path, threads=1)
    sim, ort = q(test_x[:64]).detach(), sess.run(test_x[:64])
    assert float((sim - ort).abs().max()) <= 0.02 * float(sim.abs().max())
    # convs that feed a residual Add keep float outputs, so they stay float convs in ORT
    report = sess.op_report()
    assert report.ops.get("QLinearConv", 0) >= 9 and report.int8_compute >= 10


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_resnet20_residual_adds_run_int8_end_to_end(
    shortcut: str, digits: DataBundle, test_x: torch.Tensor, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = create_zoo_model("resnet20", in_channels=1, input_size=8, shortcut=shortcut).eval()
    cfg = QuantConfig(calibration_size=64)
    q = quantize(model, cfg, calibration=digits, residual_adds=True)
    n_conv = 19 if shortcut == "A" else 21  # option B adds two 1x1 projection convs
    points = get_output_qparams(q)
    # every conv before an Add, the stem ReLU and each block's ReLU after its Add (9 blocks)
    assert len(points) == 9 + 1 + 9 + (n_conv - 19)
    assert "relu" in points and "layer3.2.relu2" in points and "layer1.0.conv2" in points
    result = export_onnx(q, tmp_path / "r.onnx", example_inputs=test_x[:1])
    assert len(result.output_qdq) == n_conv  # every conv's output is quantized, fc's is not
    sess = OrtSession(result.path, threads=1)
    sim, ort = q(test_x[:128]).detach(), sess.run(test_x[:128])
    assert float((sim.argmax(1) == ort.argmax(1)).float().mean()) >= 0.99
    assert float((sim - ort).abs().max()) <= 0.02 * float(sim.abs().max())
    report = sess.op_report()
    # no float conv is left: every conv is a QLinearConv, every residual sum a QLinearAdd
    assert report.ops.get("QLinearConv") == n_conv and report.ops.get("QLinearAdd") == 9
    assert report.float_compute == 0 and report.int8_compute == n_conv + 9 + 1
    # one NCHW -> NHWC Transpose in and one out, not a pair around every float conv
    assert report.ops.get("Transpose", 0) <= 2
    # the simulation differs from the one without residual quantization (it is not a no-op)
    plain = quantize(model, cfg, calibration=digits)
    assert get_output_qparams(plain) == {}
    assert not torch.equal(plain(test_x[:128]), sim)


class _TvBlock(nn.Module):
    """torchvision-style basic block: one ReLU module called twice, in-place residual add."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.conv1(x)))  # (B, C, H, W)
        out += x
        return self.relu(out)


def test_shared_relu_module_is_quantized_at_every_call(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), _TvBlock(8), _TvBlock(8), nn.Flatten(),
        nn.Linear(8 * 6 * 6, 4),
    ).eval()  # fmt: skip
    x = torch.randn(64, 1, 6, 6)
    q = quantize(net, QuantConfig(calibration_size=64), calibration=[x], residual_adds=True)
    assert sorted(get_output_qparams(q)) == ["1", "2.conv2", "2.relu", "3.conv2", "3.relu"]
    result = export_onnx(q, tmp_path / "tv.onnx", example_inputs=x[:1])
    sess = OrtSession(result.path, threads=1)
    sim, ort = q(x).detach(), sess.run(x)
    assert float((sim - ort).abs().max()) <= 0.02 * float(sim.abs().max())
    ops = sess.op_report().ops
    assert (ops.get("QLinearConv"), ops.get("QLinearAdd"), ops.get("Add", 0)) == (5, 2, 0)
    assert ops.get("Relu", 0) == 0 and sess.op_report().float_compute == 0


class _Seq(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)  # (B, T, 4): exported as MatMul with a pre-transposed weight


def test_errors(static_q: nn.Module, tmp_path: Path) -> None:
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ConfigError, match="opset must be >= 17, got 13"):
        export_onnx(static_q, tmp_path / "a.onnx", example_inputs=x, opset=13)
    q3d = quantize(_Seq(), QuantConfig(), calibration=[torch.randn(2, 3, 4)])
    with pytest.raises(UnsupportedLayerError, match=r"\['proj'\] not found"):
        export_onnx(q3d, tmp_path / "s.onnx", example_inputs=torch.randn(2, 3, 4))
    with pytest.raises(ModelFileError, match="ONNX file not found"):
        OrtSession(tmp_path / "missing.onnx")
    result = export_onnx(static_q, tmp_path / "q.onnx", example_inputs=x)
    with pytest.raises(ShapeError, match=r"takes 1 input\(s\)"):
        OrtSession(result.path, threads=1).run(x, x)
