"""`torchshrink prune` and `torchshrink sensitivity` end to end on digits (tiny runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import run as _run

import torchshrink
from torchshrink.cli.prune_cmd import parse_granularity, parse_schedule


def test_prune_channel_json_has_before_after_numbers_and_the_file_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p.safetensors"
    rc, text, err = _run(
        capsys,
        "prune",
        "zoo:lenet300",
        "--data",
        "digits",
        "--limit",
        "200",
        "--granularity",
        "channel",
        "--ratio",
        "0.5",
        "--round-to",
        "8",
        "--repeats",
        "3",
        "--out",
        str(out),
        "--json",
    )
    assert rc == 0, err
    rec = json.loads(text)
    assert rec["before"]["params"] == 50610
    assert rec["after"]["params"] < 0.4 * rec["before"]["params"]
    assert rec["ratios"]["macs"] < 0.4 and rec["after"]["latency_ms_p50"] > 0
    assert 0 <= rec["after"]["accuracy"] <= 1
    assert rec["prune"]["changes"] == {"fc1:out": [300, 152], "fc2:out": [100, 56]}
    model = torchshrink.load(out)
    assert (model.fc1.out_features, model.fc2.out_features) == (152, 56)


def test_prune_optimize_deploys_both_models_and_reports_the_speedup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.safetensors"
    args = ["prune", "zoo:resnet20", "--data", "digits", "--limit", "200"]
    args += ["--granularity", "channel", "--ratio", "0.5", "--repeats", "3", "--batch-size", "16"]
    args += ["--threads", "1", "--optimize", "--out", str(out), "--json"]
    rc, text, err = _run(capsys, *args)
    assert rc == 0, err
    d = json.loads(text)["deploy"]
    names = ("eager", "fold", "jit", "jit_opt", "ort", "direct", "channels_last")
    for key in ("chosen", "dense_chosen"):
        assert set(d[key].split("+")) <= set(names), d[key]
    assert d["threads"] == 1 and d["latency_ms"] > 0 and d["dense_latency_ms"] > 0
    assert d["speedup_vs_dense_optimised"] == pytest.approx(d["dense_latency_ms"] / d["latency_ms"])
    assert isinstance(d["slower_than_dense"], bool)
    rc, text, err = _run(capsys, *[a for a in args if a != "--json"])
    assert rc == 0, err
    assert "deployed: pruned " in text and "x\n" in text


def test_prune_nm_iterative_with_finetuning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, text, err = _run(
        capsys,
        "prune",
        "zoo:lenet300",
        "--data",
        "digits",
        "--limit",
        "128",
        "--granularity",
        "nm:2:4",
        "--schedule",
        "iterative:2",
        "--finetune-epochs",
        "1",
        "--repeats",
        "2",
        "--out",
        str(tmp_path / "nm.safetensors"),
        "--json",
    )
    assert rc == 0, err
    rec = json.loads(text)
    assert rec["after"]["nonzero_params"] == 50610 - (64 * 300 + 300 * 100 + 100 * 10) // 2
    assert len(rec["prune"]["steps"]) == 1  # N:M is reached at the first step
    assert rec["prune"]["accuracy"] is not None


def test_sensitivity_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, text, err = _run(
        capsys,
        "sensitivity",
        "zoo:lenet300",
        "--data",
        "digits",
        "--limit",
        "100",
        "--ratios",
        "0.5,0.9",
        "--json",
    )
    assert rc == 0, err
    rec = json.loads(text)
    assert [(p["layer"], p["ratio"]) for p in rec["points"]] == [
        ("fc1:out", 0.5),
        ("fc1:out", 0.9),
        ("fc2:out", 0.5),
        ("fc2:out", 0.9),
    ]
    rc, text, _ = _run(
        capsys,
        "sensitivity",
        "zoo:lenet300",
        "--data",
        "digits",
        "--limit",
        "100",
        "--ratios",
        "0.5",
    )
    assert rc == 0 and "fc1:out" in text and "(baseline)" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratio", "1.0"], "ratio must be in [0, 1)"),
        (["--granularity", "blocks"], "--granularity: expected unstructured, nm:N:M"),
        (["--schedule", "iterative:x"], "--schedule: K in iterative:K must be a positive"),
        (["--method", "best"], "unknown importance 'best'"),
        (["--schedule", "agp"], "schedule 'agp' prunes during fine-tuning"),
    ],
)
def test_user_errors_are_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = _run(
        capsys,
        "prune",
        "zoo:lenet300",
        "--data",
        "digits",
        "--limit",
        "50",
        "--out",
        str(tmp_path / "x.safetensors"),
        "--repeats",
        "1",
        *args,
    )
    assert rc == 2
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_parsers() -> None:
    assert parse_granularity("nm:4:8") == ("nm", 4, 8)
    assert parse_granularity("channel") == ("channel", 2, 4)
    assert parse_schedule("agp") == ("agp", 1)
    assert parse_schedule("iterative") == ("iterative", 3)
