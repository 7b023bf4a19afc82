"""The student search: multiplier space, an end-to-end 3-trial search, budget not met, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import torchshrink
from torchshrink.auto.search import pareto_front
from torchshrink.auto.student import run_student_search
from torchshrink.auto.student_config import StudentConfig
from torchshrink.auto.student_space import build_student_space, family_multipliers
from torchshrink.cli.app import main
from torchshrink.core.errors import ConfigError
from torchshrink.core.zoo.lenet import lenet300_hidden
from torchshrink.train.config import TrainConfig

QUICK = {"epochs": 3, "batch_size": 32, "lr": 0.1, "show_progress": False}


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet-300-100 trained on 8x8 digits for a few seconds, saved as a model file."""
    import torch

    torch.manual_seed(0)
    data = torchshrink.load_data("digits")
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    torchshrink.train(
        model,
        data,
        TrainConfig(epochs=3, batch_size=64, lr=0.05, show_progress=False, eval_every=9),
    )
    return torchshrink.save(model, tmp_path_factory.mktemp("teacher") / "teacher.safetensors")


def config(teacher: Path, **overrides: Any) -> StudentConfig:
    base: dict[str, Any] = {
        "teacher": str(teacher),
        "student": "zoo:lenet300",
        "data": "digits",
        "trials": 3,
        "val_size": 200,
        "search_train_size": 600,
        "widths": (0.05, 0.1, 0.2),
        "depths": (1.0,),
        "max_accuracy_drop": 0.2,
        "trial_train": QUICK,
        "final_train": QUICK,
        "latency_repeats": 3,
    }
    return StudentConfig.model_validate({**base, **overrides})


def test_family_multipliers_come_from_the_factory() -> None:
    assert family_multipliers("zoo:lenet5") == ("width",)
    assert family_multipliers("zoo:lenet300") == ("width", "depth")
    with pytest.raises(ConfigError, match=r"zoo:vgg11_bn takes no width / depth .*zoo:lenet5"):
        family_multipliers("zoo:vgg11_bn")
    with pytest.raises(ConfigError, match=r"expected a zoo family such as 'zoo:lenet5'"):
        family_multipliers("teacher.safetensors")


@pytest.mark.parametrize(("widths", "bad"), [((0.5, 0.0), "0.0"), ((-0.25,), "-0.25"), ((), "")])
def test_bad_multiplier_is_a_config_error(widths: tuple[float, ...], bad: str) -> None:
    msg = r"'widths' is empty" if not widths else rf"'widths' must be a positive number.*got {bad}"
    with pytest.raises(ConfigError, match=msg):
        build_student_space("zoo:lenet5", widths=widths, depths=(1.0,))


def test_space_keeps_only_the_family_axes() -> None:
    space = build_student_space("zoo:lenet5", widths=(1.0, 0.25, 0.25), depths=(2.0,))
    assert space.axes == {"width": (0.25, 1.0)} and space.size == 2


def test_search_resumes_distils_records_front_and_chooses_a_smaller_student(
    tmp_path: Path, teacher_file: Path
) -> None:
    first = run_student_search(config(teacher_file, trials=2), tmp_path)
    before = json.loads((tmp_path / "run.json").read_text())["search"]["trials"]
    # the same folder again with more trials: the study is topped up, nothing is redone
    res = run_student_search(config(teacher_file), tmp_path)
    run = json.loads((tmp_path / "run.json").read_text())
    search = run["search"]
    trials = search["trials"]
    assert (first.trials, res.trials) == (2, 3)
    assert [(t["number"], t["accuracy"]) for t in trials[:2]] == [
        (t["number"], t["accuracy"]) for t in before
    ]
    assert (search["mode"], search["objective"], search["budget"], len(trials)) == (
        "student", "size", 0.2, 3,
    )  # fmt: skip
    # three distinct widths were distilled: each one ran the soft-target loss term
    assert sorted(t["params"]["width"] for t in trials) == [0.05, 0.1, 0.2]
    assert all(t["kd_loss"] > 0 for t in trials)
    # the recorded front is the non-dominated set of (validation accuracy, file bytes)
    front = pareto_front([(t["number"], t["accuracy"], t["objective_value"]) for t in trials])
    assert {t["number"] for t in trials if t["pareto"]} == front == set(res.pareto)
    # chosen: the smallest file within the budget, from the search scores
    within = [t for t in trials if res.baseline_val_accuracy - t["accuracy"] <= 0.2 + 1e-9]
    chosen = next(t for t in trials if t["number"] == res.chosen)
    assert chosen["objective_value"] == min(t["objective_value"] for t in within)
    assert chosen["objective_value"] == chosen["file_bytes"]
    # the final student: distilled by the runner's distill stage, verified on the test split
    assert [s["kind"] for s in run["stages"]] == ["distill"]
    assert run["baseline"]["file_bytes"] == teacher_file.stat().st_size
    assert run["final"]["file_bytes"] < run["baseline"]["file_bytes"] / 4
    assert 0.0 < run["final"]["accuracy"] <= 1.0
    student = torchshrink.load(res.model_path)
    assert student.hidden == lenet300_hidden(chosen["params"]["width"])
    assert sum(p.numel() for p in student.parameters()) == run["final"]["params"]
    assert run["student_init"]["params"] == run["final"]["params"]
    assert "<html" in (tmp_path / "report.html").read_text()


def test_budget_not_met_exits_3_with_the_closest(
    tmp_path: Path, teacher_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "auto", str(teacher_file), "--student", "zoo:lenet300", "--data", "digits",
        "--out", str(tmp_path), "--widths", "0.01", "--depths", "1", "--trials", "1",
        "--trial-epochs", "1", "--max-accuracy-drop", "0", "--val-size", "200",
        "--search-train-size", "300",
    ]  # fmt: skip
    code = main(args)
    err = capsys.readouterr().err
    run = json.loads((tmp_path / "run.json").read_text())
    drop = run["search"]["baseline_val_accuracy"] - run["search"]["trials"][0]["accuracy"]
    assert code == 3 and run["search"]["chosen"] is None and run["stages"] == []
    assert "budget of 0.00 points" in err and "the closest, trial #0" in err
    assert f"dropped {100 * drop:.2f} points" in err and drop > 0


def test_cli_rejects_a_zero_multiplier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["auto", "t.safetensors", "--student", "zoo:lenet5", "--data", "digits",
         "--out", str(tmp_path), "--widths", "0,0.5"]
    )  # fmt: skip
    assert code != 0
    assert "every multiplier in 'widths' must be a positive number (e.g. 0.5), got 0.0" in (
        capsys.readouterr().err
    )
