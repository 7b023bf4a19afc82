"""The recipe runner on digits with LeNet-300-100 (input 8x8): end to end, fresh-process load,
resume after an interruption, and every built-in recipe with small settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError
from torchshrink.pipeline.recipe import Recipe, load_recipe, recipe_from_dict
from torchshrink.pipeline.runner import RunRecord, run_recipe

_FT = {"epochs": 1, "lr": 0.01, "show_progress": False}


def _small() -> Recipe:
    return recipe_from_dict(
        {
            "name": "small",
            "model": "zoo:lenet300",
            "model_args": {"input_size": 8},
            "data": "digits",
            "train": {"epochs": 2, "lr": 0.05, "batch_size": 64, "show_progress": False},
            "profile_repeats": 2,
            "stages": [
                {"kind": "prune", "config": {"granularity": "channel", "ratio": 0.5}},
                {"kind": "finetune", "train": _FT},
                {"kind": "cluster", "bits": 4},
                {"kind": "export"},
            ],
        }
    )


def _fresh_eval(paths: list[Path]) -> list[float]:
    """Load each model file in a new Python process and return its digits test accuracy."""
    code = (
        "import sys, json, torch, torchshrink\n"
        "torch.set_num_threads(1)\n"
        "d = torchshrink.load_data('digits')\n"
        "print(json.dumps([torchshrink.evaluate(torchshrink.load(p), d.test).accuracy"
        " for p in sys.argv[1:]]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> RunRecord:
    return run_recipe(_small(), tmp_path_factory.mktemp("small"), show_progress=False)


def test_end_to_end_writes_everything(small_run: RunRecord) -> None:
    out = small_run.out_dir
    assert small_run.finished and small_run.resumed_from == 0
    assert [s.kind for s in small_run.stages] == ["prune", "finetune", "cluster", "export"]
    names = sorted(p.name for p in (out / "stages").glob("*.safetensors"))
    assert names == [
        "00-baseline.safetensors",
        "01-prune.safetensors",
        "02-finetune.safetensors",
        "03-cluster.safetensors",
        "04-export.safetensors",
    ]
    for f in ("model.safetensors", "model.onnx", "run.json", "report.html"):
        assert (out / f).stat().st_size > 0, f
    # half the hidden neurons are physically removed: 64*150 + 150 + 150*50 + 50 + 50*10 + 10
    assert small_run.baseline["params"] == 50_610
    assert small_run.stages[0].metrics["params"] == 17_810
    assert small_run.stages[0].metrics["file_bytes"] < small_run.baseline["file_bytes"] / 2
    assert small_run.stages[3].details["onnx_bytes"] > 0


def test_run_json_contents(small_run: RunRecord, digits: DataBundle) -> None:
    run = json.loads(small_run.run_json.read_text())
    assert run["recipe"]["name"] == "small"
    assert [s["config"]["kind"] for s in run["stages"]] == [
        "prune",
        "finetune",
        "cluster",
        "export",
    ]
    assert run["stages"][0]["config"]["config"]["ratio"] == 0.5
    assert run["stages"][2]["config"]["bits"] == 4
    assert all(s["seconds"] >= 0 for s in run["stages"])
    assert set(run["versions"]) >= {"torchshrink", "torch", "python"}
    assert run["machine"]["cpu_count"] >= 1
    assert run["final"]["accuracy"] == pytest.approx(run["stages"][-1]["metrics"]["accuracy"])
    assert run["baseline"]["accuracy"] > 0.5  # two epochs on digits: far above chance (0.1)
    # every metric is of the digits test split
    assert run["final"]["accuracy"] * len(digits.test) == pytest.approx(
        round(run["final"]["accuracy"] * len(digits.test)), abs=1e-6
    )
    # baseline and final model timed in turns: a ratio a busy machine cannot fake
    paired = run["latency_vs_baseline"]
    assert paired == small_run.latency_vs_baseline
    assert paired["baseline_ms"] > 0 and paired["final_ms"] > 0 and paired["rounds"] == 2
    assert paired["speedup"] == pytest.approx(paired["baseline_ms"] / paired["final_ms"])
    assert paired["batch"] == 1


def test_output_model_loads_and_evaluates_in_fresh_process(small_run: RunRecord) -> None:
    run = json.loads(small_run.run_json.read_text())
    (acc,) = _fresh_eval([small_run.model_path])
    assert acc == pytest.approx(run["final"]["accuracy"], abs=1e-9)
    assert acc > 0.5


def test_resume_skips_finished_stages(tmp_path: Path) -> None:
    recipe = _small().model_copy(update={"stages": _small().stages[:2]})
    first = run_recipe(recipe, tmp_path, stop_after=1, show_progress=False, report=False)
    assert not first.finished and len(first.stages) == 1
    assert not (tmp_path / "model.safetensors").exists()
    ckpt = tmp_path / "stages" / "01-prune.safetensors"
    base = tmp_path / "stages" / "00-baseline.safetensors"
    stamps = (ckpt.stat().st_mtime_ns, base.stat().st_mtime_ns)

    second = run_recipe(recipe, tmp_path, resume=True, show_progress=False, report=False)
    assert second.finished and second.resumed_from == 1
    assert (ckpt.stat().st_mtime_ns, base.stat().st_mtime_ns) == stamps  # not re-run
    assert second.stages[0] == first.stages[0]
    assert [s.kind for s in second.stages] == ["prune", "finetune"]
    assert (tmp_path / "stages" / "02-finetune.safetensors").is_file()
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["resumed_from"] == 1 and len(run["stages"]) == 2


def test_resume_refuses_another_recipe(tmp_path: Path) -> None:
    recipe = _small().model_copy(update={"stages": _small().stages[:1], "profile_repeats": 0})
    run_recipe(recipe, tmp_path, stop_after=0, show_progress=False, report=False)
    other = recipe.model_copy(update={"seed": 1})
    with pytest.raises(ConfigError, match=r"resume: .*state\.json' was written for another recipe"):
        run_recipe(other, tmp_path, resume=True, show_progress=False)


_SMALL = ["train.epochs=1", "data_limit=300", "profile_repeats=0"]
_BUILTIN_OVERRIDES = {
    "deep-compression": [
        "stages.0.config.steps=1",
        "stages.0.config.finetune.epochs=1",
        "stages.1.finetune.epochs=1",
    ],
    "structured-50": ["stages.0.config.finetune.epochs=1"],
    "int8-ptq": ["stages.0.config.calibration_size=64"],
    "int4-weight-only": [],
    "prune-distill-quantize": ["stages.1.train.epochs=1", "stages.2.config.calibration_size=64"],
    "demo": ["stages.0.config.finetune.epochs=1", "stages.1.finetune.epochs=1"],
}


@pytest.fixture(scope="module")
def builtin_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunRecord]:
    out = {}
    for name, extra in _BUILTIN_OVERRIDES.items():
        recipe = load_recipe(name, overrides=_SMALL + extra)
        out[name] = run_recipe(recipe, tmp_path_factory.mktemp(name), show_progress=False)
    return out


@pytest.mark.parametrize("name", sorted(_BUILTIN_OVERRIDES))
def test_builtin_recipe_runs_end_to_end(name: str, builtin_runs: dict[str, RunRecord]) -> None:
    rec = builtin_runs[name]
    recipe = load_recipe(name)
    assert rec.finished
    assert [s.kind for s in rec.stages] == [s.kind for s in recipe.stages]
    assert rec.model_path.stat().st_size > 0
    assert 0.0 <= rec.stages[-1].metrics["accuracy"] <= 1.0
    if name == "int8-ptq":
        assert (rec.out_dir / "model.onnx").stat().st_size > 0
    if name == "deep-compression":
        # the Huffman-coded file of a 90%-sparse, 5-bit shared LeNet-300-100
        huff = rec.out_dir / "model.huffman.safetensors"
        assert rec.stages[-1].metrics["file_bytes"] == huff.stat().st_size
        assert rec.stages[-1].metrics["file_bytes"] < rec.baseline["file_bytes"] / 10


def test_builtin_outputs_load_in_fresh_process(builtin_runs: dict[str, RunRecord]) -> None:
    names = sorted(builtin_runs)  # quantized outputs included: QuantLinear / QuantConv2d rebuild
    huff = builtin_runs["deep-compression"].out_dir / "model.huffman.safetensors"
    *accs, huff_acc = _fresh_eval([*(builtin_runs[n].model_path for n in names), huff])
    assert huff_acc == accs[names.index("deep-compression")]  # bit-exact coding
    for n, acc in zip(names, accs, strict=True):
        # data_limit=300 measured on a shorter test split; the full split is within 15 points
        assert acc == pytest.approx(builtin_runs[n].stages[-1].metrics["accuracy"], abs=0.15), n


def test_prune_stage_sensitivity_reaches_details_and_report(
    builtin_runs: dict[str, RunRecord],
) -> None:
    rec = builtin_runs["structured-50"]  # the recipe asks for ratios 0.25 / 0.5 / 0.75
    table = rec.stages[0].details["sensitivity"]
    points = table["points"]
    assert {p["ratio"] for p in points} == {0.25, 0.5, 0.75}
    assert len({p["layer"] for p in points}) >= 2
    assert all(0.0 <= p["accuracy"] <= 1.0 for p in points)
    assert "Sensitivity" in rec.report_html.read_text()
