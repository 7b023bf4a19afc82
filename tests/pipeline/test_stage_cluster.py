"""The recipe's cluster stage: the centroid gradient (``reduce``) reaches the fine-tuning."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import torchshrink
from torchshrink.cluster import cluster_weights
from torchshrink.core.errors import ConfigError
from torchshrink.pipeline.recipe import Recipe, recipe_from_dict
from torchshrink.pipeline.stages import StageContext, run_stage

_FT = {"epochs": 1, "lr": 0.01, "batch_size": 64, "show_progress": False, "seed": 0}


def _recipe(reduce: str | None) -> Recipe:
    stage: dict[str, object] = {"kind": "cluster", "bits": 2, "finetune": _FT}
    if reduce is not None:
        stage["reduce"] = reduce
    return recipe_from_dict(
        {
            "name": "cluster-reduce",
            "model": "zoo:lenet300",
            "model_args": {"input_size": 8},
            "data": "digits",
            "stages": [stage],
        }
    )


def _moved(reduce: str | None, tmp_path: Path) -> tuple[float, int]:
    """Mean |weight change| of fc1 over the centroid fine-tune, and fc1's distinct values."""
    recipe = _recipe(reduce)
    data = torchshrink.load_data("digits", limit=256)
    torch.manual_seed(0)
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    clustered = copy.deepcopy(model)
    cluster_weights(clustered, 2)  # what the stage starts its fine-tune from
    ctx = StageContext(recipe=recipe, data=data, out_dir=tmp_path, baseline_path=tmp_path / "b")
    out, _ = run_stage(recipe.stages[0], model, ctx)
    w = out.get_submodule("fc1").weight.detach()
    moved = (w - clustered.get_submodule("fc1").weight.detach()).abs().mean().item()
    return moved, int(torch.unique(w[w != 0]).numel())


def test_default_is_deep_compressions_sum() -> None:
    stage = _recipe(None).stages[0]
    assert stage.kind == "cluster" and stage.reduce == "sum"


def test_mean_reduce_takes_one_weights_step(tmp_path: Path) -> None:
    summed, k_sum = _moved("sum", tmp_path)
    mean, k_mean = _moved("mean", tmp_path)
    # fc1 at 2 bits: ~59k weights per cluster, so the summed step is thousands of times larger.
    assert k_sum <= 4 and k_mean <= 4
    assert mean > 0
    assert summed > 100 * mean


def test_bad_reduce_names_the_field() -> None:
    with pytest.raises(ConfigError, match="reduce"):
        _recipe("median")


def test_bias_bits_share_the_biases_through_the_fine_tune(tmp_path: Path) -> None:
    recipe = recipe_from_dict(
        {
            "name": "cluster-bias",
            "model": "zoo:lenet300",
            "model_args": {"input_size": 8},
            "data": "digits",
            "stages": [{"kind": "cluster", "bits": 3, "bias_bits": 2, "finetune": _FT}],
        }
    )
    data = torchshrink.load_data("digits", limit=256)
    torch.manual_seed(0)
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    ctx = StageContext(recipe=recipe, data=data, out_dir=tmp_path, baseline_path=tmp_path / "b")
    out, _ = run_stage(recipe.stages[0], model, ctx)
    for name in ("fc1", "fc2", "fc3"):
        b = out.get_submodule(name).bias.detach()
        assert torch.unique(b[b != 0]).numel() <= 4, name


def test_bad_bias_bits_names_the_field() -> None:
    stage = {"kind": "cluster", "bits": 3, "bias_bits": 0}
    with pytest.raises(ConfigError, match="bias_bits"):
        recipe_from_dict(
            {"name": "x", "model": "zoo:lenet300", "data": "digits", "stages": [stage]}
        )
