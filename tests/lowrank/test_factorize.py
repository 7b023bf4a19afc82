"""factorize() over whole models: rank rules, skip rules, report, save / load of zoo models."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import torchshrink
from torchshrink.lowrank import FactorizeConfig, factorize
from torchshrink.lowrank.factorize import reconstructed_weight


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.conv(x)).mean(dim=(2, 3)))


def test_skip_rule_more_params_for_a_tiny_layer() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    before = [p.detach().clone() for p in model.parameters()]
    report = factorize(
        model,
        FactorizeConfig(ranks={"0": 3, "2": 1}, max_latency_ratio=None),
        example_inputs=torch.randn(2, 4),
    )
    first, second = report.layers
    assert (first.applied, first.reason) == (False, "more params")
    assert (first.params_before, first.params_after) == (20, 3 * 8 + 4)
    assert first.latency_before_ms is None
    assert isinstance(model[0], nn.Linear)
    # Rank 1 of Linear(4, 2): 1 * 6 + 2 = 8 < 10 params, so it is replaced.
    assert second.applied and isinstance(model[2], nn.Sequential)
    assert all(
        torch.equal(a, b) for a, b in zip(before[:2], list(model.parameters())[:2], strict=True)
    )


def test_skip_rule_slower_uses_measured_latency() -> None:
    model = nn.Sequential(nn.Linear(256, 256))
    config = FactorizeConfig(ranks={"0": 16}, max_latency_ratio=1e-3, latency_repeats=3)
    report = factorize(model, config, example_inputs=torch.randn(8, 256))
    (layer,) = report.layers
    assert (layer.applied, layer.reason) == (False, "slower")
    assert layer.latency_before_ms is not None and layer.latency_before_ms > 0
    assert layer.latency_after_ms is not None and layer.latency_after_ms > 0
    assert isinstance(model[0], nn.Linear) and report.ratio == 1.0


def test_lenet300_svd_halves_params_and_layers_equal_reconstructed_weights() -> None:
    torch.manual_seed(0)
    model = torchshrink.load_model("zoo:lenet300")
    reference = torchshrink.load_model("zoo:lenet300")
    reference.load_state_dict(model.state_dict())
    x = torch.randn(16, 1, 28, 28)
    config = FactorizeConfig(ratio=2.0, max_latency_ratio=None)
    report = factorize(model, config, example_inputs=x)
    assert [r.name for r in report.applied] == ["fc1", "fc2", "fc3"]
    assert report.layers[0].rank == (108,)
    assert report.ratio >= 2.0
    assert report.params_after == sum(p.numel() for p in model.parameters())
    for r in report.applied:
        assert r.params_before / r.params_after >= 2.0
        assert 0 < r.weight_error < 1 and r.output_error is not None
    # The factorized model computes exactly the model with low-rank weights.
    for name in ("fc1", "fc2", "fc3"):
        getattr(reference, name).weight.data.copy_(reconstructed_weight(getattr(model, name)))
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-4)
    d = report.to_dict()
    assert d["layers"][0]["name"] == "fc1" and d["ratio"] == pytest.approx(report.ratio)


def test_factorized_lenet300_saves_and_loads(tmp_path: Path) -> None:
    model = torchshrink.load_model("zoo:lenet300")
    factorize(model, FactorizeConfig(energy=0.5, max_latency_ratio=None),
              example_inputs=torch.randn(2, 1, 28, 28))  # fmt: skip
    assert isinstance(model.fc1, nn.Sequential)
    path = torchshrink.save(model, tmp_path / "lenet300_svd.tsm")
    back = torchshrink.load(path)
    x = torch.randn(8, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    assert sum(p.numel() for p in back.parameters()) == sum(p.numel() for p in model.parameters())


def test_factorized_resnet20_tucker_saves_and_loads(tmp_path: Path) -> None:
    model = torchshrink.load_model("zoo:resnet20")
    x = torch.randn(2, 3, 32, 32)
    config = FactorizeConfig(ratio=2.0, linear=False, als_iters=1, max_latency_ratio=None)
    report = factorize(model, config, example_inputs=x)
    assert len(report.applied) >= 18
    assert all(r.kind == "tucker2" for r in report.applied)
    assert report.ratio > 1.8
    path = torchshrink.save(model, tmp_path / "resnet20_tucker.tsm")
    back = torchshrink.load(path)
    model.eval()
    with torch.no_grad():
        assert torch.equal(back(x), model(x))


def test_separable_method_include_ignore_and_filter() -> None:
    model = Tiny()
    x = torch.randn(2, 3, 8, 8)
    config = FactorizeConfig(conv="separable", linear=False, max_latency_ratio=None)
    report = factorize(model, config, example_inputs=x)
    (layer,) = report.layers
    assert (layer.kind, layer.rank, layer.applied) == ("separable", (1,), True)
    assert model.conv[0].groups == 3 and model(x).shape == (2, 4)
    # ignore / include / filter_fn select nothing here.
    for cfg, fn in [
        (FactorizeConfig(energy=0.5, ignore=["conv", "head"]), None),
        (FactorizeConfig(energy=0.5, include=["nope.*"]), None),
        (FactorizeConfig(energy=0.5), lambda m, name: False),
    ]:
        assert factorize(Tiny(), cfg, example_inputs=x, filter_fn=fn).layers == ()


def test_config_validation() -> None:
    with pytest.raises(pydantic.ValidationError, match="give one rank rule"):
        FactorizeConfig(energy=0.9, ratio=2.0)
    with pytest.raises(pydantic.ValidationError, match="give a rank rule"):
        FactorizeConfig()
    with pytest.raises(pydantic.ValidationError, match="not a valid regex"):
        FactorizeConfig(energy=0.9, ignore=["fc("])
    with pytest.raises(pydantic.ValidationError, match="ratio"):
        FactorizeConfig(ratio=0.5)
    assert FactorizeConfig(conv="separable", linear=False).multiplier == 1
