"""`torchshrink deep-compression` end to end on digits (a tiny run) and its usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_helpers import run as _run

import torchshrink
from torchshrink.cli.deep_compression_cmd import parse_ratios
from torchshrink.core.errors import ConfigError


def test_json_record_has_every_stage_and_the_file_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dc.safetensors"
    rc, text, err = _run(
        capsys,
        "deep-compression", "zoo:lenet300", "--data", "digits", "--limit", "300",
        "--prune-ratio", "0.9", "--layer-ratios", "fc3=0.5", "--prune-steps", "1",
        "--fc-bits", "4", "--finetune-epochs", "1", "--out", str(out), "--json",
    )  # fmt: skip
    assert rc == 0, err
    rec = json.loads(text)
    assert [s["stage"] for s in rec["stages"]] == [
        "dense", "pruned", "clustered", "centroids", "huffman",
    ]  # fmt: skip
    assert rec["stages"][0]["nonzeros"] == 50610
    assert rec["ratio"] == pytest.approx(4 * 50610 / out.stat().st_size)
    assert rec["ratio"] > 15
    layers = {x["name"]: x for x in rec["layers"]}
    assert layers["fc1"]["kept"] == pytest.approx(0.1, abs=0.002)
    assert layers["fc3"]["kept"] == pytest.approx(0.5, abs=0.01)
    assert all(x["bits"] == 4 and x["clusters"] <= 16 for x in layers.values())
    model = torchshrink.load(out)
    w = model.fc1.weight.detach()
    assert torch.unique(w[w != 0]).numel() <= 16


def test_fold_dead_saves_a_smaller_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fold.ts"
    rc, text, err = _run(
        capsys,
        "deep-compression", "zoo:lenet300", "--data", "digits", "--limit", "300",
        "--layer-ratios", "fc1=0.97,fc2=0.9,fc3=0.5", "--prune-steps", "1",
        "--fc-bits", "4", "--finetune-epochs", "0", "--fold-dead", "--out", str(out), "--json",
    )  # fmt: skip
    assert rc == 0, err
    rec = json.loads(text)
    assert [s["stage"] for s in rec["stages"]][-2:] == ["folded", "huffman"]
    model = torchshrink.load(out)
    assert model.fc1.out_features < 300  # neurons left without weights are gone
    assert bool((model.fc1.weight != 0).any(1).all())


def test_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, text, err = _run(
        capsys,
        "deep-compression", "zoo:lenet300", "--data", "digits", "--limit", "200",
        "--prune-steps", "1", "--finetune-epochs", "0", "--out", str(tmp_path / "t.ts"),
    )  # fmt: skip
    assert rc == 0, err
    assert "huffman" in text and "smaller than dense fp32" in text


def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = _run(
        capsys, "deep-compression", "zoo:lenet300", "--data", "digits",
        "--layer-ratios", "fc1:0.9", "--out", str(tmp_path / "x.ts"),
    )  # fmt: skip
    assert rc == 2 and err.startswith("error: --layer-ratios: expected NAME=RATIO")
    rc, _, err = _run(
        capsys, "deep-compression", "zoo:lenet300", "--data", "digits", "--limit", "50",
        "--prune-ratio", "1.5", "--out", str(tmp_path / "x.ts"),
    )  # fmt: skip
    assert rc == 2 and "prune_ratio" in err and "Traceback" not in err
    assert parse_ratios("fc1=0.92, fc2=0.5") == {"fc1": 0.92, "fc2": 0.5}
    with pytest.raises(ConfigError, match="NAME=RATIO"):
        parse_ratios("=0.3")


def test_teacher_and_agp_reach_the_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A wider LeNet-300 trained briefly on digits is the teacher of a LeNet-300.
    data = torchshrink.load_data("digits", limit=300)
    teacher = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8, "width": 2})
    torchshrink.train(teacher, data, torchshrink.TrainConfig(epochs=2, show_progress=False))
    t_path = torchshrink.save(teacher, tmp_path / "teacher.safetensors")
    common = (
        "deep-compression", "zoo:lenet300", "--data", "digits", "--limit", "300",
        "--prune-ratio", "0.8", "--schedule", "agp", "--finetune-epochs", "1", "--json",
    )  # fmt: skip
    outs = {}
    for tag, extra in {
        "plain": (),
        "kd": ("--teacher", str(t_path), "--temperature", "3", "--alpha", "0.6"),
    }.items():
        out = tmp_path / f"{tag}.ts"
        rc, text, err = _run(capsys, *common, *extra, "--out", str(out))
        assert rc == 0, err
        rec = json.loads(text)
        outs[tag] = torchshrink.load(out).fc1.weight.detach()
        assert rec["config"]["prune_schedule"] == "agp"
        assert rec["stages"][1]["nonzeros"] < 0.25 * rec["stages"][0]["nonzeros"]
    assert rec["teachers"] == [str(t_path)]
    assert rec["config"]["distill"]["temperature"] == 3.0
    assert rec["config"]["distill"]["alpha"] == 0.6
    # the same seed and schedule: only the teacher's soft targets differ
    assert not torch.equal(outs["plain"], outs["kd"])


def test_bad_teacher_and_schedule_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8, "num_classes": 5})
    o_path = torchshrink.save(other, tmp_path / "five.safetensors")
    rc, _, err = _run(
        capsys, "deep-compression", "zoo:lenet300", "--data", "digits", "--limit", "50",
        "--teacher", str(o_path), "--out", str(tmp_path / "x.ts"),
    )  # fmt: skip
    assert rc == 2 and err.startswith("error:") and "teacher" in err and "Traceback" not in err
    rc, _, err = _run(
        capsys, "deep-compression", "zoo:lenet300", "--data", "digits", "--limit", "50",
        "--schedule", "gradual", "--out", str(tmp_path / "x.ts"),
    )  # fmt: skip
    assert rc == 2 and err.startswith("error: --schedule: expected 'iterative' or 'agp'")


def test_bias_bits_share_the_saved_biases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "b.ts"
    rc, text, err = _run(
        capsys,
        "deep-compression", "zoo:lenet300", "--data", "digits", "--limit", "300",
        "--prune-ratio", "0.9", "--prune-steps", "1", "--fc-bits", "3",
        "--finetune-epochs", "0", "--bias-bits", "2", "--out", str(out), "--json",
    )  # fmt: skip
    assert rc == 0, err
    assert json.loads(text)["config"]["bias_bits"] == 2
    model = torchshrink.load(out)
    for layer in (model.fc1, model.fc2, model.fc3):
        b = layer.bias.detach()
        assert torch.unique(b[b != 0]).numel() <= 4
