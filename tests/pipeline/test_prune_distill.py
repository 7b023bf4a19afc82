"""Prune stages that distil from the model the recipe started from (``PruneStage.distill``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

import torchshrink
from torchshrink.auto.objective import build_candidate, search_data
from torchshrink.auto.space import SearchSpace
from torchshrink.core.errors import ConfigError
from torchshrink.distill import DistillConfig
from torchshrink.pipeline.recipe import Recipe, load_recipe, recipe_from_dict
from torchshrink.pipeline.runner import run_recipe
from torchshrink.train.config import TrainConfig

QUICK = TrainConfig(epochs=1, batch_size=64, lr=0.02, show_progress=False)
KD = DistillConfig(alpha=0.7, temperature=4.0)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    data = torchshrink.load_data("digits", limit=800)
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    torchshrink.train(model, data, TrainConfig(epochs=2, lr=0.05, show_progress=False))
    return torchshrink.save(model, tmp_path_factory.mktemp("base") / "base.safetensors")


def _old_build(
    baseline_path: Path, stages: list[dict[str, Any]], data: Any, work_dir: Path
) -> nn.Module:
    # The candidate builder as it was before prune stages took ``distill`` (kept here, verbatim
    # in what it computes, to pin the recorded search numbers to the new stage).
    from torchshrink.distill.distiller import distill_loss_terms
    from torchshrink.pipeline.stages import StageContext, run_stage
    from torchshrink.prune.pruner import prune

    work_dir.mkdir(parents=True, exist_ok=True)
    recipe = recipe_from_dict({"model": str(baseline_path), "data": data.name, "stages": stages})
    ctx = StageContext(recipe=recipe, data=data, out_dir=work_dir, baseline_path=baseline_path)
    model = torchshrink.load(baseline_path)
    teacher = torchshrink.load(baseline_path).eval()
    for stage in recipe.stages:
        if stage.kind != "prune":
            model, _ = run_stage(stage, model, ctx)
            continue
        terms = distill_loss_terms(model, teacher, KD)
        cfg = stage.config
        if cfg.finetune is not None:
            ce = (1 - KD.alpha) * cfg.finetune.ce_weight
            cfg = cfg.model_copy(
                update={"finetune": cfg.finetune.model_copy(update={"ce_weight": ce})}
            )
        prune(model, cfg, example_inputs=ctx.example_inputs(), data=ctx.data, loss_terms=terms)
        for term in terms:
            getattr(term, "close", lambda: None)()
    return model


def _stages(agp: bool) -> list[dict[str, Any]]:
    space = SearchSpace("unstructured", {"fc1": (0.0, 0.8)}, {"fc1": (0, 4), "fc2": (0, 4)})
    params = {"prune:fc1": 0.8, "bits:fc1": 4, "bits:fc2": 4}
    return space.stages(params, finetune=QUICK, centroid_finetune=QUICK, agp=agp)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_distilled_prune_stage_is_bit_identical_to_the_old_candidate_builder(
    baseline: Path, tmp_path: Path
) -> None:
    data = search_data(
        torchshrink.load_data("digits", limit=800), val_size=150, train_size=400, seed=0
    )
    stages = _stages(agp=True)
    torch.manual_seed(0)
    old = _weights(_old_build(baseline, stages, data, tmp_path / "old"))
    torch.manual_seed(0)
    new, _, details = build_candidate(baseline, stages, data, work_dir=tmp_path / "new", distill=KD)
    # the same stages with ``distill`` written into the prune stage by hand
    inline = [
        dict(s, distill=KD.model_dump(mode="json")) if s["kind"] == "prune" else s for s in stages
    ]
    torch.manual_seed(0)
    by_hand, _, _ = build_candidate(baseline, inline, data, work_dir=tmp_path / "inline")
    assert [d["kind"] for d in details] == ["prune", "cluster", "export"]
    assert details[0]["distilled"] is True
    assert len(old) == len(_weights(new)) == 6
    assert all(torch.equal(old[k], v) for k, v in _weights(new).items())
    assert all(torch.equal(old[k], v) for k, v in _weights(by_hand).items())
    # and the kd term mattered: without it the weights differ
    torch.manual_seed(0)
    plain, _, _ = build_candidate(baseline, stages, data, work_dir=tmp_path / "plain")
    assert (_weights(plain)["fc1.weight"] - old["fc1.weight"]).abs().max().item() > 1e-4


def test_undistilled_prune_without_fine_tune_gets_no_distill_key(
    baseline: Path, tmp_path: Path
) -> None:
    # auto's one-shot prune (a plain finetune stage follows) is not distilled, as before
    data = search_data(
        torchshrink.load_data("digits", limit=800), val_size=150, train_size=400, seed=0
    )
    torch.manual_seed(0)
    stages = _stages(agp=False)
    assert "finetune" not in stages[0]["config"]
    _, _, details = build_candidate(baseline, stages, data, work_dir=tmp_path, distill=KD)
    assert [d["kind"] for d in details] == ["prune", "finetune", "cluster", "export"]
    assert "distilled" not in details[0]
    d = details[0]
    assert d["sparsity"] == pytest.approx(1 - d["nonzero_after"] / d["params_before"])
    assert d["sparsity"] == pytest.approx(0.8, abs=0.01)


def _recipe_doc(**prune: Any) -> dict[str, Any]:
    return {
        "model": "zoo:lenet300",
        "model_args": {"input_size": 8},
        "data_limit": 500,
        "train": {"epochs": 1, "lr": 0.05, "show_progress": False},
        "profile_repeats": 0,
        "stages": [{"kind": "prune", **prune}],
    }


def test_recipe_yaml_with_distill_runs_and_records_the_stage(tmp_path: Path) -> None:
    doc = _recipe_doc(
        config={"ratio": 0.6, "finetune": {"epochs": 1, "lr": 0.02, "show_progress": False}},
        distill={"alpha": 0.6, "temperature": 3.0},
    )
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    rec = run_recipe(path, tmp_path / "run", show_progress=False, report=False)
    run = json.loads(rec.run_json.read_text())
    stage = run["stages"][0]
    assert stage["kind"] == "prune" and stage["details"]["distilled"] is True
    assert stage["config"]["distill"]["alpha"] == 0.6
    assert stage["config"]["distill"]["temperature"] == 3.0
    assert stage["details"]["sparsity"] == pytest.approx(0.6, abs=0.05)
    assert 0.0 < stage["metrics"]["accuracy"] <= 1.0


def test_recipe_with_distill_round_trips_yaml_json_and_schema(tmp_path: Path) -> None:
    doc = _recipe_doc(config={"ratio": 0.5, "finetune": {"epochs": 1}}, distill={"alpha": 0.5})
    r = recipe_from_dict(doc)
    assert r.stages[0].distill == DistillConfig(alpha=0.5)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r.model_dump(mode="json")))
    assert load_recipe(path) == r
    assert Recipe.model_validate_json(r.model_dump_json()) == r
    schema = json.dumps(Recipe.model_json_schema())
    assert '"distill"' in schema and "DistillConfig" in schema
    assert recipe_from_dict(_recipe_doc(config={"ratio": 0.5})).stages[0].distill is None


def test_distill_without_fine_tune_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"stage 0 \(prune\).*distill.*config\.finetune"):
        recipe_from_dict(_recipe_doc(config={"ratio": 0.5}, distill={"alpha": 0.5}))
    with pytest.raises(ConfigError, match=r"distill.*alpha"):
        recipe_from_dict(
            _recipe_doc(config={"ratio": 0.5, "finetune": {"epochs": 1}}, distill={"alpha": 2})
        )
