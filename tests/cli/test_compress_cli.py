"""`torchshrink compress` and `torchshrink report` through the real entry point."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from torchshrink.cli.app import main

_SMALL = [
    "--set", "train.epochs=1",
    "--set", "data_limit=300",
    "--set", "profile_repeats=0",
    "--set", "stages.0.config.finetune.epochs=1",
]  # fmt: skip


def test_compress_builtin_writes_run_and_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["compress", "structured-50", "--out", str(out), *_SMALL, "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert [s["stage"] for s in rec["stages"]] == ["baseline", "1. prune"]
    assert rec["stages"][0]["params"] == 50_610
    assert rec["stages"][1]["params"] == 17_810
    assert rec["report"] == str(out / "report.html")
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert "report:" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert "<svg" in page and "data:image/png" not in page  # inline SVG charts, no images


def test_compress_resume_reports_resumed_stage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["compress", "structured-50", "--out", str(out), *_SMALL, "--json"]) == 0
    capsys.readouterr()
    args = ["compress", "structured-50", "--out", str(out), *_SMALL, "--resume", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["resumed_from"] == 1


def test_bad_recipe_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: zoo:lenet300\nstages:\n  - kind: prune\n    config: {ratio: 2.5}\n")
    assert main(["compress", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert re.search(r"bad\.yaml.*stage 0 \(prune\).*config\.ratio", err)


def test_bad_set_and_unknown_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compress", "int8-ptq", "--set", "stages.0.kind=melt"]) == 2
    assert "stage 0: field 'kind': expected one of" in capsys.readouterr().err
    assert main(["compress", "nope"]) == 2
    assert "no built-in recipe of that name" in capsys.readouterr().err


def test_report_of_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "cannot read run record" in capsys.readouterr().err
