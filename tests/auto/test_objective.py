"""Building a candidate: the validation hold-out, and distillation from the dense baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import torchshrink
from torchshrink.auto import run_auto
from torchshrink.auto.objective import build_candidate, holdout_split, search_data
from torchshrink.auto.space import SearchSpace
from torchshrink.distill import DistillConfig
from torchshrink.train.config import TrainConfig

QUICK = TrainConfig(epochs=1, batch_size=64, lr=0.02, show_progress=False)


def test_holdout_split_is_the_search_validation_part() -> None:
    data = torchshrink.load_data("digits", limit=500)
    val, rest = holdout_split(len(data.train), val_size=120, seed=3)
    s = search_data(data, val_size=120, train_size=None, seed=3)
    assert s.test.indices == val and s.train.indices == rest
    assert len(set(val) & set(rest)) == 0 and len(val) + len(rest) == len(data.train)
    assert holdout_split(len(data.train), val_size=120, seed=4)[0] != val


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    data = torchshrink.load_data("digits")
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    torchshrink.train(model, data, TrainConfig(epochs=2, lr=0.05, show_progress=False))
    return torchshrink.save(model, tmp_path_factory.mktemp("base") / "base.safetensors")


def _build(baseline: Path, tmp: Path, distill: DistillConfig | None) -> tuple[dict, list]:
    data = search_data(torchshrink.load_data("digits"), val_size=200, train_size=600, seed=0)
    space = SearchSpace("unstructured", {"fc1": (0.0, 0.8)}, {"fc1": (0, 4), "fc2": (0, 4)})
    params = {"prune:fc1": 0.8, "bits:fc1": 4, "bits:fc2": 4}
    stages = space.stages(params, finetune=QUICK, centroid_finetune=QUICK, agp=True)
    torch.manual_seed(0)
    model, path, details = build_candidate(baseline, stages, data, work_dir=tmp, distill=distill)
    assert path is not None and path.name == "model.huffman.safetensors"
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, details


def test_distillation_reaches_the_fine_tunes_and_changes_the_result(
    baseline: Path, tmp_path: Path
) -> None:
    plain, plain_details = _build(baseline, tmp_path / "plain", None)
    again, _ = _build(baseline, tmp_path / "again", None)
    kd, kd_details = _build(baseline, tmp_path / "kd", DistillConfig(alpha=0.7, temperature=4))
    # the same seed without distillation repeats itself exactly: the difference is the term
    assert all(torch.equal(plain[k], again[k]) for k in plain)
    assert [d["kind"] for d in kd_details] == ["prune", "cluster", "export"]
    assert kd_details[0]["distilled"] is True  # the pruning fine-tune got the kd term
    assert "distilled" not in kd_details[1]  # the centroid fine-tune did not (see builder)
    assert "distilled" not in plain_details[0]
    assert round(kd_details[0]["sparsity"], 1) >= 0.5
    diff = (kd["fc1.weight"] - plain["fc1.weight"]).abs().max().item()
    assert diff > 1e-4
    # the pruned weights stay pruned under the distilled fine-tune
    assert (kd["fc1.weight"] == 0).float().mean().item() >= 0.79


@pytest.mark.integration
def test_run_auto_builds_the_distilled_final_through_the_runner(  # type: ignore[no-untyped-def]
    tmp_path: Path, tiny_config
) -> None:
    cfg = tiny_config(
        trials=2,
        max_accuracy_drop=0.5,
        data_limit=600,
        final_finetune={"epochs": 1, "lr": 0.02, "show_progress": False},
        promote=0,
        centroid_finetune={"epochs": 1, "lr": 0.001, "show_progress": False},
        distill={"alpha": 0.7, "temperature": 4.0},
    )
    res = run_auto(cfg, tmp_path)
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["search"]["distill"]["alpha"] == 0.7
    assert "built_with_distillation" not in doc  # a normal compress record, stage by stage
    built = doc["stages"]
    assert [d["kind"] for d in built][-1] == "export"
    assert all("accuracy" in d["metrics"] for d in built)
    prune = [d for d in built if d["kind"] == "prune"]
    assert [d["details"].get("distilled") for d in prune] in (
        [True],
        [],  # every layer drawn at ratio 0: no prune stage
    )
    assert [d["config"]["distill"]["alpha"] for d in prune] in ([0.7], [])
    assert res.model_path is not None and res.model_path.is_file()
    assert 0.0 < res.final["accuracy"] <= 1.0 and res.final["file_bytes"] > 0
