"""The search space: config validation, sensitivity bounds, candidate recipes, Pareto front."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import torchshrink
from torchshrink.auto import AutoConfig, SearchSpace, build_space, pareto_front
from torchshrink.auto.objective import evaluate_candidate, search_data
from torchshrink.core.errors import DataError
from torchshrink.pipeline.recipe import recipe_from_dict


def test_config_rejects_unknown_objective_and_field() -> None:
    with pytest.raises(ValidationError, match="objective"):
        AutoConfig(model="zoo:lenet5", objective="speed")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="trails"):
        AutoConfig.model_validate({"model": "zoo:lenet5", "trails": 3})


def test_study_name_is_derived_from_model_data_objective() -> None:
    a = AutoConfig(model="zoo:lenet5", data="npz:/d/mnist.npz", objective="latency")
    assert a.study_name == "auto-zoo-lenet5-npz-d-mnist-npz-latency"
    assert AutoConfig(model="m.safetensors", study="mine").study_name == "mine"


def test_search_data_holds_out_validation_from_train(digits) -> None:  # type: ignore[no-untyped-def]
    s = search_data(digits, val_size=300, train_size=500, seed=0)
    assert (len(s.test), len(s.train)) == (300, 500)
    assert set(s.test.indices).isdisjoint(s.train.indices)  # type: ignore[attr-defined]
    with pytest.raises(DataError, match="val_size=5000"):
        search_data(digits, val_size=5000, train_size=None, seed=0)


def test_build_space_cuts_ratios_by_sensitivity(digits, tiny_config) -> None:  # type: ignore[no-untyped-def]
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})  # untrained
    cfg = tiny_config(ratios=(0.25, 0.5, 0.9, 0.97))
    space = build_space(model, digits, cfg)
    assert sorted(space.ratios) == ["fc1", "fc2", "fc3"]
    assert sorted(space.bits) == ["fc1", "fc2", "fc3"]
    for layer, choices in space.ratios.items():
        assert choices[0] == 0.0 and max(choices) == space.bounds[layer]
    assert SearchSpace.from_dict(space.to_dict()) == space
    chan = build_space(model, digits, tiny_config(objective="latency"))
    assert chan.granularity == "channel" and chan.bits == {}
    assert sorted(chan.ratios) == ["fc1:out", "fc2:out"]


def test_stages_name_every_layer_and_validate_as_a_recipe() -> None:
    space = SearchSpace("unstructured", {"fc1": (0.0, 0.9), "fc2": (0.0, 0.5)}, {"fc1": (0, 4)})
    stages = space.stages(
        {"prune:fc1": 0.9, "prune:fc2": 0.0, "bits:fc1": 4}, finetune=None, centroid_finetune=None
    )
    assert [s["kind"] for s in stages] == ["prune", "cluster", "export"]
    assert stages[0]["config"]["layer_ratios"] == {"fc1": 0.9, "fc2": 0.0}
    r = recipe_from_dict({"model": "zoo:lenet300", "stages": stages})
    assert r.stages[0].config.ratio == 0.9
    chan = SearchSpace("channel", {"fc1:out": (0.0, 0.5)})
    [prune] = chan.stages({"prune:fc1:out": 0.5}, finetune=None, centroid_finetune=None)
    assert prune["config"]["layer_ratios"] == {"fc1": 0.5}


def test_candidate_is_measured_by_its_coded_file(digits, tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    base = torchshrink.save(m, tmp_path / "base.safetensors")
    space = SearchSpace(
        "unstructured", {"fc1": (0.9,), "fc2": (0.9,), "fc3": (0.0,)}, {"fc1": (4,)}
    )
    params = {"prune:fc1": 0.9, "prune:fc2": 0.9, "prune:fc3": 0.0, "bits:fc1": 4}
    stages = space.stages(params, finetune=None, centroid_finetune=None)
    sdata = search_data(digits, val_size=100, train_size=100, seed=0)
    res = evaluate_candidate(base, stages, sdata, objective="size", work_dir=tmp_path / "t")
    coded = tmp_path / "t" / "model.huffman.safetensors"
    assert res.objective_value == res.file_bytes == coded.stat().st_size
    assert res.file_bytes < base.stat().st_size / 5
    assert res.nonzero_params < 0.2 * sum(p.numel() for p in m.parameters())
    assert 0.0 <= res.accuracy <= 1.0


def test_pareto_front_keeps_non_dominated_points() -> None:
    pts = [(0, 0.9, 100.0), (1, 0.95, 200.0), (2, 0.9, 150.0), (3, 0.95, 200.0), (4, 0.8, 90.0)]
    assert pareto_front(pts) == {0, 1, 3, 4}
    assert pareto_front([]) == set()


def test_latency_candidate_removes_channels_and_times_them(digits, tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    base = torchshrink.save(m, tmp_path / "base.safetensors")
    space = SearchSpace("channel", {"fc1:out": (0.5,), "fc2:out": (0.0,)})
    stages = space.stages(
        {"prune:fc1:out": 0.5, "prune:fc2:out": 0.0}, finetune=None, centroid_finetune=None
    )
    sdata = search_data(digits, val_size=100, train_size=100, seed=0)
    res = evaluate_candidate(
        base, stages, sdata, objective="latency", work_dir=tmp_path / "t", latency_repeats=3
    )
    assert res.latency_ms is not None and res.objective_value == res.latency_ms > 0
    assert res.macs is None and res.energy_mj is None
    kept = 150 * 64 + 150 + 100 * 150 + 100 + 10 * 100 + 10  # fc1 keeps 150 of 300 neurons
    assert res.nonzero_params <= kept


def test_agp_prunes_during_the_finetune_for_unstructured_only() -> None:
    from torchshrink.train.config import TrainConfig

    ft = TrainConfig(epochs=2, lr=0.02, show_progress=False)
    space = SearchSpace("unstructured", {"fc1": (0.0, 0.9)}, {"fc1": (0, 4)})
    stages = space.stages({"prune:fc1": 0.9, "bits:fc1": 4}, finetune=ft, centroid_finetune=None, agp=True)  # fmt: skip
    assert [s["kind"] for s in stages] == ["prune", "cluster", "export"]
    r = recipe_from_dict({"model": "zoo:lenet300", "stages": stages})
    assert r.stages[0].config.schedule == "agp" and r.stages[0].config.finetune.epochs == 2
    plain = space.stages({"prune:fc1": 0.9, "bits:fc1": 4}, finetune=ft, centroid_finetune=None)
    assert [s["kind"] for s in plain] == ["prune", "finetune", "cluster", "export"]
    chan = SearchSpace("channel", {"fc1:out": (0.0, 0.5)})
    stages = chan.stages({"prune:fc1:out": 0.5}, finetune=ft, centroid_finetune=None, agp=True)
    assert [s["kind"] for s in stages] == ["prune", "finetune"]
    assert stages[0]["config"].get("schedule") is None
