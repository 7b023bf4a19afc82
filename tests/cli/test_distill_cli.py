"""``torchshrink distill`` end to end: real teachers trained by the CLI, a real student file."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import as_json, run

import torchshrink

STUDENT = """
from torch import nn

def mlp(hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
"""


@pytest.fixture
def teachers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[Path]:
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"teacher{seed}.tsm"
        code, out, err = run(
            capsys, "train", "zoo:lenet300", "--data", "digits", "--preset", "digits",
            "--epochs", 4, "--seed", seed, "--out", path, "--json",
        )  # fmt: skip
        assert code == 0, err
        assert as_json(out)["test_accuracy"] > 0.85
        paths.append(path)
    return paths


def test_distill_ensemble_into_student_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], teachers: list[Path]
) -> None:
    student_file = tmp_path / "student.py"
    student_file.write_text(STUDENT)
    out_path = tmp_path / "student.tsm"
    code, out, err = run(
        capsys, "distill", f"{student_file}:mlp", "--teacher", teachers[0], "--teacher",
        teachers[1], "--data", "digits", "--temperature", 4, "--alpha", 0.9, "--epochs", 6,
        "--preset", "digits", "--out", out_path, "--json",
    )  # fmt: skip
    assert code == 0, err
    rec = as_json(out)
    assert len(rec["teacher_accuracies"]) == 2
    assert all(a > 0.85 for a in rec["teacher_accuracies"])
    assert rec["test_accuracy"] > 0.6
    assert 0.6 < rec["agreement"] <= 1.0
    assert rec["distill_config"]["temperature"] == 4.0
    assert rec["train_config"]["epochs"] == 6
    data = torchshrink.load_data("digits")
    back = torchshrink.load(out_path)
    acc = torchshrink.evaluate(back, data.test).accuracy
    assert acc == pytest.approx(rec["test_accuracy"])
    assert sum(p.numel() for p in back.parameters()) == 64 * 8 + 8 + 8 * 10 + 10


def test_distill_cli_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "distill", "zoo:lenet300", "--teacher", "zoo:lenet300", "--data", "digits",
        "--alpha", 1.5, "--out", tmp_path / "s.tsm",
    )  # fmt: skip
    assert code == 2
    assert err.startswith("error: invalid DistillConfig") and "alpha" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(
        capsys, "distill", "zoo:lenet300", "--teacher", "zoo:lenet300", "--data", "digits",
        "--feature", "fc1", "--out", tmp_path / "s.tsm",
    )  # fmt: skip
    assert code != 0 and "--feature: expected STUDENT_LAYER=TEACHER_LAYER" in err
    code, _, err = run(
        capsys, "distill", "zoo:lenet300", "--teacher", tmp_path / "missing.tsm", "--data",
        "digits", "--limit", 64, "--out", tmp_path / "s.tsm",
    )  # fmt: skip
    assert code != 0 and "missing.tsm" in err and len(err.strip().splitlines()) == 1
    code, _, _ = run(capsys, "distill", "zoo:lenet300", "--data", "digits", "--out", "x.tsm")
    assert code == 2  # --teacher is required
