"""Weight sharing by k-means: cluster counts, zeros kept, MSE, layer selection, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchshrink
from torchshrink.cluster import cluster_weights
from torchshrink.core.errors import ConfigError


def _pruned(name: str, amount: float = 0.9) -> nn.Module:
    model = torchshrink.load_model(f"zoo:{name}")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(torch.rand_like(m.weight) > amount)
    return model


def test_five_bits_keeps_zeros_and_reports_mse() -> None:
    model = _pruned("lenet300")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = cluster_weights(model, 5)
    assert [layer.name for layer in report.layers] == ["fc1", "fc2", "fc3"]
    for layer in report.layers:
        w_old, w_new = before[f"{layer.name}.weight"], getattr(model, layer.name).weight.detach()
        nz = w_old != 0
        assert torch.equal(w_new != 0, nz)  # zeros stay zero, survivors stay non-zero
        distinct = torch.unique(w_new[nz]).numel()
        assert distinct == layer.clusters and 2 < distinct <= 32
        assert layer.nonzeros == int(nz.sum())
        mse = float(((w_new[nz].double() - w_old[nz].double()) ** 2).mean())
        assert layer.mse == pytest.approx(mse, rel=1e-3, abs=1e-12)
        assert torch.equal(getattr(model, layer.name).bias, before[f"{layer.name}.bias"])
    assert report.mse == pytest.approx(
        sum(x.mse * x.nonzeros for x in report.layers) / sum(x.nonzeros for x in report.layers)
    )


def test_per_layer_bits_map_and_ignore() -> None:
    model = _pruned("lenet5")
    fc2 = model.fc2.weight.clone()
    report = cluster_weights(model, {"conv.*": 8, "fc1": 5}, ignore=["conv1"])
    assert [x.name for x in report.layers] == ["conv2", "fc1"]
    assert report.layer("conv2").bits == 8 and 32 < report.layer("conv2").clusters <= 256
    assert report.layer("fc1").clusters <= 32
    assert torch.equal(model.fc2.weight, fc2)  # matched by no entry: left alone
    with pytest.raises(KeyError, match="fc2"):
        report.layer("fc2")


def test_exact_solver_is_no_worse_than_lloyd() -> None:
    torch.manual_seed(1)
    a, b = nn.Linear(20, 10), nn.Linear(20, 10)
    b.load_state_dict(a.state_dict())
    lloyd = cluster_weights(a, 2).layers[0]
    exact = cluster_weights(b, 2, exact=True).layers[0]
    assert exact.mse <= lloyd.mse + 1e-12
    assert exact.clusters == 4


def test_conv1d_and_empty_layers() -> None:
    model = nn.Sequential(nn.Conv1d(4, 8, 3), nn.Linear(8, 8))
    with torch.no_grad():
        model[1].weight.zero_()
    report = cluster_weights(model, 1)
    assert [x.name for x in report.layers] == ["0"]  # the all-zero Linear is skipped
    assert torch.unique(model[0].weight).numel() == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 0}, r"bits must be an integer in 1\.\.16, got 0"),
        ({"bits": {"fc.*": 17}}, "got 17"),
        ({"bits": 4, "init": "random"}, "init must be one of"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cluster_weights(nn.Linear(4, 4), **kwargs)  # type: ignore[arg-type]
