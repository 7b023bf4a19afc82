"""The command line end to end: real models, real data, real files; user errors are one line."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cli_helpers import as_json, run

USER_MODELS = """
import torch
from torch import nn

def mlp(hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

def not_a_module():
    return 42
"""

if TYPE_CHECKING:
    from conftest import HostilePickle


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    p = tmp_path / "user_models.py"
    p.write_text(USER_MODELS)
    return p


def test_profile_lenet5_params_and_macs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profile", "zoo:lenet5", "--json", "--repeats", "3")
    assert code == 0
    rec = as_json(out)
    assert rec["params"] == 431_080
    assert rec["macs"] == pytest.approx(2_293_000, rel=0.01)
    for key in (
        "nonzero_params",
        "dense_bytes",
        "file_bytes",
        "latency_ms_p50",
        "latency_ms_p90",
        "throughput",
        "energy_mj",
    ):
        assert rec[key] is not None and rec[key] > 0, key
    assert rec["dense_bytes"] == 4 * 431_080
    assert rec["latency_ms_p90"] >= rec["latency_ms_p50"]


def test_profile_lenet300_params(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profile", "zoo:lenet300", "--json", "--no-latency")
    assert code == 0
    rec = as_json(out)
    assert rec["params"] == 266_610
    assert rec["macs"] == pytest.approx(266_200, rel=0.01)


def test_profile_table_output_names_layers(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profile", "zoo:lenet300", "--no-latency")
    assert code == 0
    assert "266,610" in out and "Linear" in out


def test_profile_with_data_reports_accuracy_and_model_args(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(
        capsys, "profile", "zoo:lenet300", "--data", "digits", "--json", "--no-latency"
    )
    assert code == 0
    rec = as_json(out)
    # options came from the data: 8x8 inputs, 10 classes
    assert rec["params"] == 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert 0.0 <= rec["accuracy"] <= 1.0


def test_train_then_eval_then_profile_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "m.safetensors"
    code, out, _ = run(
        capsys,
        "train",
        "zoo:lenet300",
        "--data",
        "digits",
        "--epochs",
        "3",
        "--out",
        out_file,
        "--json",
    )
    assert code == 0, out
    rec = as_json(out)
    assert rec["test_accuracy"] > 0.8
    code, out, _ = run(capsys, "eval", out_file, "--data", "digits", "--json")
    assert code == 0
    assert as_json(out)["accuracy"] == pytest.approx(rec["test_accuracy"])
    code, out, _ = run(capsys, "profile", out_file, "--data", "digits", "--json", "--no-latency")
    assert code == 0
    prof = as_json(out)
    assert prof["file_bytes"] == out_file.stat().st_size
    assert prof["accuracy"] == pytest.approx(rec["test_accuracy"])


def test_user_factory_with_model_arg(capsys: pytest.CaptureFixture[str], user_file: Path) -> None:
    code, out, _ = run(
        capsys,
        "profile",
        f"{user_file}:mlp",
        "--model-arg",
        "hidden=32",
        "--input-shape",
        "1,8,8",
        "--json",
        "--no-latency",
    )
    assert code == 0
    assert as_json(out)["params"] == 64 * 32 + 32 + 32 * 10 + 10


def test_zoo_listing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "zoo", "--json")
    assert code == 0
    rows = {r["name"]: r["params"] for r in json.loads(out)}
    assert rows["zoo:lenet5"] == 431_080
    assert rows["zoo:resnet56"] == 853_018


# ---------------------------------------------------------------- user errors: one line, exit 2


def _assert_one_line_error(code: int, err: str, pattern: str) -> None:
    import re

    assert code == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert re.search(pattern, lines[0]), lines[0]


def test_error_unknown_zoo_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "profile", "zoo:nope", "--no-latency")
    _assert_one_line_error(code, err, r"nope.*lenet300.*lenet5")


def test_error_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "profile", tmp_path / "absent.safetensors", "--no-latency")
    _assert_one_line_error(code, err, "absent.safetensors")


def test_error_corrupt_model_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    assert (
        run(capsys, "train", "zoo:lenet300", "--data", "digits", "--epochs", "0", "--out", good)[0]
        == 0
    )
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    code, _, err = run(capsys, "profile", bad, "--no-latency")
    _assert_one_line_error(code, err, "bad.safetensors")


def test_error_pickle_file_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, hostile: HostilePickle
) -> None:
    p = tmp_path / "evil.pt"
    p.write_bytes(pickle.dumps({"w": hostile}))
    code, _, err = run(capsys, "profile", p, "--no-latency")
    _assert_one_line_error(code, err, "(?i)pickle")
    code, _, err = run(capsys, "profile", "zoo:lenet300", "--weights", p, "--no-latency")
    _assert_one_line_error(code, err, "(?i)refused|code execution")
    assert not hostile.marker.exists()


def test_error_factory_not_found_or_not_module(
    capsys: pytest.CaptureFixture[str], user_file: Path
) -> None:
    code, _, err = run(capsys, "profile", f"{user_file}:nope", "--no-latency")
    _assert_one_line_error(code, err, "nope.*mlp")
    code, _, err = run(
        capsys, "profile", f"{user_file}:not_a_module", "--input-shape", "1,8,8", "--no-latency"
    )
    _assert_one_line_error(code, err, "int")


def test_error_input_shape_names_layer(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "profile", "zoo:lenet300", "--input-shape", "1,32,32", "--no-latency"
    )
    _assert_one_line_error(code, err, r"fc1|Linear")


def test_error_bad_input_shape_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "profile", "zoo:lenet300", "--input-shape", "1,a,b", "--no-latency")
    _assert_one_line_error(code, err, "--input-shape")


def test_error_unknown_data_and_empty_data(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "eval", "zoo:lenet300", "--data", "nosuchdata")
    _assert_one_line_error(code, err, "nosuchdata.*digits")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    code, _, err = run(capsys, "profile", "zoo:lenet300", "--data", f"text:{empty}", "--no-latency")
    _assert_one_line_error(code, err, "(?i)empty|no samples")


def test_error_invalid_train_option(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(
        capsys,
        "train",
        "zoo:lenet300",
        "--data",
        "digits",
        "--lr",
        "-1",
        "--out",
        tmp_path / "x.safetensors",
    )
    _assert_one_line_error(code, err, "lr")


def test_console_script_prints_no_traceback(tmp_path: Path) -> None:
    exe = shutil.which("torchshrink") or str(Path(sys.executable).parent / "torchshrink")
    proc = subprocess.run([exe, "profile", "zoo:nope"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "unknown zoo model 'nope'" in proc.stderr


def test_demo_runs_the_demo_recipe_end_to_end(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    small = ["--set", "data_limit=300", "--set", "stages.0.config.finetune.epochs=1",
             "--set", "stages.1.finetune.epochs=1", "--set", "profile_repeats=2"]  # fmt: skip
    code, out, _ = run(capsys, "demo", "--out", tmp_path, "--epochs", "1", *small)
    assert code == 0
    run_doc = json.loads((tmp_path / "run.json").read_text())
    assert run_doc["recipe"]["name"] == "demo"
    assert [s["kind"] for s in run_doc["stages"]] == ["prune", "cluster", "export"]
    huff = tmp_path / "model.huffman.safetensors"
    assert run_doc["stages"][-1]["metrics"]["file_bytes"] == huff.stat().st_size
    assert huff.stat().st_size < run_doc["baseline"]["file_bytes"] / 4  # pruned + 6-bit + Huffman
    assert "vs baseline:" in out and "x smaller on disk" in out
    assert f"report: {tmp_path / 'report.html'}" in out
    assert f"compressed model file: {huff}" in out


def test_usage_errors_exit_2_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "profile", "zoo:lenet300", "--no-such-option")
    assert code == 2
    assert "no-such-option" in err and "Traceback" not in err
    code, _, err = run(capsys, "profile", "zoo:lenet300", "--batch-size", "many")
    assert code == 2 and "--batch-size" in err


def test_cli_does_not_need_click_installed() -> None:
    # typer may vendor click; the CLI must not import the standalone package itself.
    import ast

    src = (Path(__file__).parents[2] / "src" / "torchshrink" / "cli").glob("*.py")
    for path in src:
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.split(".")[0] == "click"], path
