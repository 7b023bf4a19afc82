"""`torchshrink quantize` / `export`, and `eval` / `profile` of an .onnx file, on digits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import run as _run
from torch import nn

import torchshrink
from torchshrink.core.databundle import DataBundle


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, digits: DataBundle) -> Path:
    """zoo:lenet300 for 8x8 digits, trained briefly and saved as a model file."""
    torch.manual_seed(0)
    model = torchshrink.load_model(
        "zoo:lenet300", model_args={"in_channels": 1, "input_size": 8, "num_classes": 10}
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for x, y in digits.loader("train", batch_size=64):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return torchshrink.save(model, tmp_path_factory.mktemp("q") / "l300.safetensors")


def test_w8a8_json_and_fresh_process_eval_of_the_file(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q.safetensors"
    rc, text, err = _run(
        capsys, "quantize", str(model_file), "--data", "digits", "--scheme", "w8a8",
        "--calibration", "64", "--out", str(out), "--json",
    )  # fmt: skip
    assert rc == 0, err
    rec = json.loads(text)
    assert [(r["name"], r["bits"]) for r in rec["layers"]] == [("fc1", 8), ("fc2", 8), ("fc3", 8)]
    assert rec["calibration_samples"] == 64 and rec["size_ratio"] < 0.35
    assert rec["after"]["accuracy"] > rec["before"]["accuracy"] - 0.03
    script = Path(sys.executable).with_name("torchshrink")
    proc = subprocess.run(
        [str(script), "eval", str(out), "--data", "digits", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] == pytest.approx(rec["after"]["accuracy"], abs=1e-6)


@pytest.mark.parametrize(
    ("scheme", "bits", "limit"),
    [("w4", [4, 4, 4], 0.2), ("binary", [None, 1, None], 0.5), ("mixed:3", None, 0.2)],
)
def test_low_bit_schemes_print_bits_and_shrink_the_file(
    model_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    scheme: str,
    bits: list[int | None] | None,
    limit: float,
) -> None:
    extra = ["--keep-float", "fc1", "--keep-float", "fc3"] if scheme == "binary" else []
    out = tmp_path / "q.safetensors"
    rc, text, err = _run(
        capsys, "quantize", str(model_file), "--data", "digits", "--scheme", scheme,
        "--calibration", "64", "--out", str(out), "--json", *extra,
    )  # fmt: skip
    assert rc == 0, err
    rec = json.loads(text)
    got = {r["name"]: r["bits"] for r in rec["layers"]}
    if bits is not None:
        assert [got[n] for n in ("fc1", "fc2", "fc3")] == bits
    else:
        assert rec["avg_bits"] <= 3.0 and all(r["sensitivity"] >= 0 for r in rec["layers"])
    assert rec["size_ratio"] < limit
    back = torchshrink.load(out)
    assert back(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_table_output_names_layers_and_sizes(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, text, err = _run(
        capsys, "quantize", str(model_file), "--data", "digits", "--scheme", "ternary",
        "--out", str(tmp_path / "t.safetensors"),
    )  # fmt: skip
    assert rc == 0, err
    assert "fc2" in text and "codebook" in text and "bytes" in text


def test_export_then_eval_and_profile_the_onnx_file(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], digits: DataBundle
) -> None:
    pytest.importorskip("onnxruntime")
    q = tmp_path / "q.safetensors"
    assert _run(capsys, "quantize", str(model_file), "-d", "digits", "--out", str(q))[0] == 0
    onnx_path = tmp_path / "q.onnx"
    rc, text, err = _run(
        capsys, "export", str(q), "--format", "onnx", "--data", "digits",
        "--out", str(onnx_path), "--json",
    )  # fmt: skip
    assert rc == 0, err
    rec = json.loads(text)
    assert rec["int8_layers"] == ["fc1", "fc2", "fc3"]
    assert rec["ort_top1_agreement"] >= 0.99 and rec["ort_max_abs_diff"] < 0.1
    rc, text, err = _run(capsys, "eval", str(onnx_path), "--data", "digits", "--json")
    assert rc == 0, err
    onnx_acc = json.loads(text)["accuracy"]
    torch_acc = torchshrink.evaluate(torchshrink.load(q), digits.test).accuracy
    assert onnx_acc == pytest.approx(torch_acc, abs=0.01)
    rc, text, err = _run(
        capsys, "profile", str(onnx_path), "--data", "digits", "--repeats", "3", "--json"
    )
    assert rc == 0, err
    prof = json.loads(text)
    assert prof["latency_ms_p50"] > 0 and prof["int8_compute_ops"] >= 1
    assert prof["file_bytes"] == onnx_path.stat().st_size


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--scheme", "w9"], "weight bits 9 out of range"),
        (["--scheme", "mixed:1"], "average bits 1 is out of range"),
        (["--scheme", "w4x"], "unknown scheme 'w4x'"),
        (["--calibration", "0"], "--calibration 0"),
    ],
)
def test_bad_input_exits_2_naming_the_problem(
    model_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    match: str,
) -> None:
    out = tmp_path / "q.safetensors"
    rc, _, err = _run(
        capsys, "quantize", str(model_file), "--data", "digits", "--out", str(out), *args
    )
    assert rc == 2 and match in err and not out.exists()


def test_nan_weight_in_the_model_file_exits_2(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = torchshrink.load(model_file)
    with torch.no_grad():
        model.fc2.weight[3, 4] = float("nan")
    bad = torchshrink.save(model, tmp_path / "nan.safetensors")
    rc, _, err = _run(
        capsys, "quantize", str(bad), "-d", "digits", "--out", str(tmp_path / "q.safetensors")
    )
    assert rc == 2 and "fc2.weight contains NaN" in err


def test_qat_epochs_trains_the_quantized_model_and_saves_it(
    model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "qat.safetensors"
    rc, text, err = _run(
        capsys, "quantize", str(model_file), "--data", "digits", "--scheme", "w4",
        "--qat-epochs", "1", "--calibration", "64", "--out", str(out), "--json",
    )  # fmt: skip
    assert rc == 0, err
    rec = json.loads(text)
    assert rec["qat"]["epochs"] == 1 and rec["qat"]["lr"] == 0.01
    assert [r["bits"] for r in rec["layers"]] == [4, 4, 4]
    # the saved file is the trained, converted model: it reloads to the same accuracy
    reloaded = torchshrink.evaluate(torchshrink.load(out), torchshrink.load_data("digits").test)
    assert reloaded.accuracy == pytest.approx(rec["after"]["accuracy"], abs=1e-9)
    assert rec["after"]["accuracy"] > 0.5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheme", "kmeans:16", "--qat-epochs", "1"], "scheme 'kmeans:16' has no quantization"),
        (["--scheme", "w4", "--qat-epochs", "-1"], "--qat-epochs -1: expected 0"),
    ],
)
def test_qat_epochs_bad_input_is_a_one_line_error(
    model_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    rc, _, err = _run(
        capsys, "quantize", str(model_file), "--data", "digits", "--out",
        str(tmp_path / "x.safetensors"), *args,
    )  # fmt: skip
    assert rc == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "x.safetensors").exists()


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained one-block-per-stage ResNet-20 for 8x8 digits: three residual adds."""
    torch.manual_seed(0)
    model = torchshrink.load_model(
        "zoo:resnet20",
        model_args={"input_size": 8, "in_channels": 1, "width": 0.25, "depth": 0.34},
    )
    return torchshrink.save(model, tmp_path_factory.mktemp("res") / "res.safetensors")


@pytest.mark.parametrize(
    ("flag", "expected", "adds", "int8_ops", "float_ops"),
    [([], True, 3, 11, 0), (["--no-residual-adds"], False, 0, 4, 4)],
)
def test_static_scheme_quantizes_residual_adds_unless_told_not_to(
    resnet_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: list[str],
    expected: bool,
    adds: int,
    int8_ops: int,
    float_ops: int,
) -> None:
    pytest.importorskip("onnxruntime")
    from torchshrink.deploy.ort_session import OrtSession

    q, onnx_path = tmp_path / "q.safetensors", tmp_path / "q.onnx"
    rc, text, err = _run(
        capsys, "quantize", str(resnet_file), "-d", "digits", "--limit", "64",
        "--calibration", "32", "--out", str(q), "--json", *flag,
    )  # fmt: skip
    assert rc == 0, err
    assert json.loads(text)["residual_adds"] is expected
    rc, _, err = _run(capsys, "export", str(q), "-d", "digits", "--out", str(onnx_path))
    assert rc == 0, err
    assert OrtSession(onnx_path, threads=1).op_report().ops.get("QLinearAdd", 0) == adds
    rc, text, err = _run(
        capsys, "profile", str(onnx_path), "-d", "digits", "--limit", "16", "--repeats", "1",
        "--json",
    )  # fmt: skip
    assert rc == 0, err
    prof = json.loads(text)
    assert (prof["int8_compute_ops"], prof["float_compute_ops"]) == (int8_ops, float_ops)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheme", "w4"], "scheme 'w4' does not quantize activations"),
        (["--scheme", "w8a8_dynamic"], "scheme 'w8a8_dynamic' does not quantize activations"),
        (["--scheme", "w8a8", "--qat-epochs", "1"], "--qat-epochs) keeps residual adds in float"),
    ],
)
def test_residual_adds_where_they_cannot_apply_is_a_one_line_error(
    resnet_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    out = tmp_path / "x.safetensors"
    rc, _, err = _run(
        capsys, "quantize", str(resnet_file), "-d", "digits", "--out", str(out),
        "--residual-adds", *args,
    )  # fmt: skip
    assert rc == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def test_weight_only_scheme_reports_residual_adds_off(
    resnet_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, text, err = _run(
        capsys, "quantize", str(resnet_file), "-d", "digits", "--scheme", "w4", "--limit", "64",
        "--out", str(tmp_path / "w4.safetensors"), "--json",
    )  # fmt: skip
    assert rc == 0, err
    rec = json.loads(text)
    assert rec["residual_adds"] is False and rec["mode"] == "weight_only"
