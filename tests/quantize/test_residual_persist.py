"""Residual-add output quantizers survive a model file: same adds, same QLinearAdd graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import torchshrink
from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ModelFileError
from torchshrink.core.modelfile import read_header
from torchshrink.core.modulestate import apply_modules, record_modules
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.ptq import quantize
from torchshrink.quantize.residual import get_output_qparams

_ARGS = {"in_channels": 1, "input_size": 8}


@pytest.fixture(scope="module")
def quantized(digits: DataBundle) -> nn.Module:
    torch.manual_seed(0)
    model = torchshrink.load_model("zoo:resnet20", model_args=_ARGS).eval()
    cfg = QuantConfig(calibration_size=64)
    return quantize(model, cfg, calibration=digits, residual_adds=True)


@pytest.fixture(scope="module")
def test_x(digits: DataBundle) -> torch.Tensor:
    return torch.stack([digits.test[i][0] for i in range(64)])  # (64, 1, 8, 8)


def test_saved_and_loaded_model_keeps_int8_adds(
    quantized: nn.Module, test_x: torch.Tensor, tmp_path: Path
) -> None:
    points = get_output_qparams(quantized)
    assert len(points) == 19  # 9 convs before an Add, the stem ReLU, 9 ReLUs after an Add
    path = torchshrink.save(quantized, tmp_path / "r20.safetensors")
    extras = {n: r["extras"] for n, r in read_header(path)["modules"].items() if "extras" in r}
    assert sorted(extras) == sorted(points)
    assert extras["layer1.0.conv2"]["output_quant"]["scale"] == points["layer1.0.conv2"].scale

    loaded = torchshrink.load(path)
    assert get_output_qparams(loaded) == points
    with torch.no_grad():
        assert torch.equal(loaded(test_x), quantized(test_x))


def test_loaded_model_exports_the_same_qlinearadd_graph(
    quantized: nn.Module, test_x: torch.Tensor, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from torchshrink.deploy.onnx_export import export_onnx
    from torchshrink.deploy.ort_session import OrtSession

    loaded = torchshrink.load(torchshrink.save(quantized, tmp_path / "r20.safetensors"))
    ops = []
    outs = []
    for i, model in enumerate((quantized, loaded)):
        result = export_onnx(model, tmp_path / f"m{i}.onnx", example_inputs=test_x[:1])
        assert len(result.output_qdq) == 19  # every conv output quantized
        sess = OrtSession(result.path, threads=1)
        ops.append(sess.op_report().ops)
        outs.append(sess.run(test_x))
    assert ops[1].get("QLinearAdd") == 9 and ops[1].get("QLinearConv") == 19
    assert ops[0] == ops[1]
    assert float((outs[0] - outs[1]).abs().max()) == 0.0
    with torch.no_grad():
        sim = loaded(test_x)
    assert float((sim - outs[1]).abs().max()) <= 0.02 * float(sim.abs().max())


def test_plain_models_record_no_extras_and_bad_extras_are_refused() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    assert all("extras" not in r for r in record_modules(net).values())
    rec = json.loads(json.dumps(record_modules(net)))
    rec["1"]["extras"] = {"output_quant": {"name": "1", "scale": -1.0, "zero_point": 0}}
    with pytest.raises(ModelFileError, match="malformed 'output_quant' record"):
        apply_modules(net, rec)
    spec = {"bits": 8, "signed": False, "symmetric": False}
    rec["1"]["extras"] = {
        "output_quant": {"name": "1", "scale": -1.0, "zero_point": 0, "spec": spec}
    }
    with pytest.raises(ModelFileError, match=r"scale must be > 0, got -1\.0"):
        apply_modules(net, rec)
    rec["1"]["extras"] = {"telepathy": 1}
    with pytest.raises(ModelFileError, match="carries the extra 'telepathy'"):
        apply_modules(net, rec)
    rec["1"]["extras"] = {
        "output_quant": {"name": "1", "scale": 0.5, "zero_point": 0, "spec": spec}
    }
    apply_modules(net, rec)
    assert list(get_output_qparams(net)) == ["1"]
    y = net(torch.randn(8, 4)).detach()  # (8, 4)
    assert torch.equal(y, torch.round(y / 0.5) * 0.5)  # on the restored 0.5 grid
