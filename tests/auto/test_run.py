"""run_auto end to end: the run folder of compress plus the search record; budget not met."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import torchshrink
from torchshrink.auto import run_auto
from torchshrink.cli.app import main


def test_run_auto_writes_compress_layout_and_search(tmp_path: Path, tiny_config) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config(
        trials=3, max_accuracy_drop=0.05, final_finetune={"epochs": 1, "show_progress": False}
    )
    res = run_auto(cfg, tmp_path)
    run = json.loads((tmp_path / "run.json").read_text())
    search = run["search"]
    assert (search["objective"], search["budget"], len(search["trials"])) == ("size", 0.05, 3)
    assert {"number", "accuracy", "objective_value", "pareto", "params"} <= set(search["trials"][0])
    chosen = next(t for t in search["trials"] if t["number"] == search["chosen"])
    assert res.baseline_val_accuracy - chosen["accuracy"] <= 0.05 + 1e-9
    within = [
        t for t in search["trials"] if res.baseline_val_accuracy - t["accuracy"] <= 0.05 + 1e-9
    ]
    assert chosen["objective_value"] == min(t["objective_value"] for t in within)
    assert chosen["pareto"] and res.chosen in res.pareto
    # the compress layout: baseline and final metrics on the test split, stages, model file
    assert run["final"]["file_bytes"] < run["baseline"]["file_bytes"] / 3
    assert [s["kind"] for s in run["stages"]][-1] == "export"
    model = torchshrink.load(res.model_path)
    assert sum(p.numel() for p in model.parameters()) == run["final"]["params"]
    assert "<html" in (tmp_path / "report.html").read_text()


def test_budget_not_met_reports_closest_and_exits_3(tmp_path: Path, tiny_config, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config(
        trials=2, max_accuracy_drop=0.0, ratios=(0.97,), bits=(1,), trial_finetune=None
    )
    res = run_auto(cfg, tmp_path)
    assert res.chosen is None and res.model_path is None and res.closest is not None
    assert res.closest_drop is not None and res.closest_drop > 0
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["search"]["chosen"] is None and run["search"]["closest"] == res.closest
    assert run["stages"] == [] and (tmp_path / "report.html").is_file()
    # the command on the same folder: the study already holds its trials; nothing to choose
    args = ["auto", "zoo:lenet300", "--data", "digits", "--out", str(tmp_path), "--val-size", "200"]
    code = main([*args, "--trials", "2", "--max-accuracy-drop", "0"])
    err = capsys.readouterr().err
    assert code == 3
    assert "budget of 0.00 points" in err and f"trial #{res.closest}" in err
    assert f"dropped {100 * res.closest_drop:.2f} points" in err


def test_cli_rejects_unknown_objective(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(
        ["auto", "zoo:lenet300", "--data", "digits", "--out", str(tmp_path), "--objective", "speed"]
    )
    assert code == 2
    assert "objective" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="0"):
        raise SystemExit(main(["auto", "--help"]))


def test_cli_distill_flag_reaches_the_search(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    args = ["auto", "zoo:lenet300", "--data", "digits", "--out", str(tmp_path), "--val-size", "200"]
    code = main(
        [*args, "--trials", "1", "--trial-epochs", "1", "--final-epochs", "1", "--train-epochs",
         "2", "--max-accuracy-drop", "90", "--distill", "--temperature", "3", "--alpha", "0.6",
         "--json"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["search"]["distill"]["temperature"] == 3.0
    assert run["search"]["distill"]["alpha"] == 0.6
