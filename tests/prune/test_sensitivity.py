"""Sensitivity tables: one point per layer and ratio, the model unchanged, the curve sensible."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchshrink.core.errors import ConfigError
from torchshrink.core.zoo import create_zoo_model
from torchshrink.prune.sensitivity import sensitivity


def _teacher_data() -> tuple[nn.Module, TensorDataset]:
    # Labels come from the model itself, so the baseline accuracy is exactly 1.
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
    ).eval()
    x = torch.randn(256, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, TensorDataset(x, y)


def test_channel_sensitivity_has_a_point_per_group_and_ratio_and_leaves_the_model() -> None:
    model, ds = _teacher_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = sensitivity(model, ds, example_inputs=torch.zeros(1, 8), ratios=(0.25, 0.5, 0.9))
    assert t.baseline_accuracy == 1.0
    assert t.layers() == ["0:out", "2:out"]
    assert len(t.points) == 6
    assert [p.ratio for p in t.curve("0:out")] == [0.25, 0.5, 0.9]
    assert t.curve("0:out")[-1].accuracy < t.curve("0:out")[0].accuracy
    assert t.curve("0:out")[0].params > t.curve("0:out")[-1].params
    assert 0.0 <= t.max_ratio("0:out", max_drop=0.05) <= 0.9
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert t.to_dict()["points"][0]["layer"] == "0:out"


def test_unstructured_and_layer_sensitivity() -> None:
    model, ds = _teacher_data()
    w = model[0].weight.detach().clone()
    t = sensitivity(
        model, ds, example_inputs=torch.zeros(1, 8), granularity="unstructured", ratios=(0.5,)
    )
    assert t.layers() == ["0", "2", "4"]
    assert all(p.accuracy <= 1.0 for p in t.points)
    assert torch.equal(model[0].weight, w)
    net = create_zoo_model("resnet20", input_size=8, num_classes=4).eval()
    x = torch.randn(16, 3, 8, 8)
    lt = sensitivity(
        net,
        TensorDataset(x, torch.zeros(16, dtype=torch.long)),
        example_inputs=x[:1],
        granularity="layer",
    )
    assert len(lt.layers()) == 7 and {p.ratio for p in lt.points} == {1.0}


def test_bad_arguments_are_refused() -> None:
    model, ds = _teacher_data()
    with pytest.raises(ConfigError, match=r"ratios: every ratio must be in \[0, 1\), got 1.0"):
        sensitivity(model, ds, example_inputs=torch.zeros(1, 8), ratios=(0.5, 1.0))
    with pytest.raises(ConfigError, match="granularity: sensitivity supports"):
        sensitivity(model, ds, example_inputs=torch.zeros(1, 8), granularity="nm")
