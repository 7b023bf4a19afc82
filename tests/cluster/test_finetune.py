"""Centroid fine-tuning: per-cluster gradients, zeros kept, distinct values never grow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchshrink
from torchshrink.cluster import cluster_weights
from torchshrink.cluster.finetune import (
    Assignment,
    CentroidHook,
    assignments_from_model,
    finetune_centroids,
)
from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError
from torchshrink.train.config import TrainConfig
from torchshrink.train.hooks import TrainState
from torchshrink.train.schedules import build_optimizer, build_scheduler


@pytest.fixture(scope="module")
def trained(digits: DataBundle) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    torchshrink.train(model, digits, TrainConfig.preset("digits", epochs=6, show_progress=False))
    return model.state_dict()


def _clustered(bits: int = 3, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    torch.manual_seed(0)
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    if state is not None:
        model.load_state_dict(state)
    with torch.no_grad():  # prune 80% so that zeros are part of every test
        for m in (model.fc1, model.fc2, model.fc3):
            m.weight.mul_(m.weight.abs() > m.weight.abs().flatten().quantile(0.8))
    cluster_weights(model, bits)
    return model


def _distinct(t: torch.Tensor) -> int:
    t = t.detach()
    return int(torch.unique(t[t != 0]).numel())


def test_assignments_reconstruct_the_weights_compactly() -> None:
    model = _clustered()
    a = assignments_from_model(model)
    assert list(a) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    for key, asg in a.items():
        w = model.get_parameter(key).detach()
        assert asg.labels.dtype == torch.int16 and asg.labels.shape == w.shape
        assert asg.clusters == _distinct(w) <= 8
        assert torch.equal(asg.weight(), w)
        assert int((asg.labels == -1).sum()) == int((w == 0).sum())


def test_finetune_keeps_zeros_and_never_grows_distinct_values(
    digits: DataBundle, trained: dict[str, torch.Tensor]
) -> None:
    model = _clustered(2, trained)  # 4 centroids per layer: accuracy drops, fine-tuning helps
    clustered_acc = torchshrink.evaluate(model, digits.test).accuracy
    zeros = {k: (p == 0).clone() for k, p in model.named_parameters() if k.endswith("weight")}
    before = {k: _distinct(model.get_parameter(k)) for k in zeros}
    old_codebooks = {k: a.codebook.clone() for k, a in assignments_from_model(model).items()}
    cfg = TrainConfig(epochs=2, lr=0.002, batch_size=64, show_progress=False)
    result = finetune_centroids(model, digits, cfg)
    for key, mask in zeros.items():
        w = model.get_parameter(key).detach()
        assert torch.equal(w == 0, mask)  # pruned zeros stay zero, and no survivor hits zero
        assert _distinct(w) == result.clusters[key] <= before[key]
        asg = result.assignments[key]
        assert torch.equal(asg.weight(), w)  # every weight equals its (updated) centroid
        assert not torch.equal(asg.codebook, old_codebooks[key])  # the centroids did move
    assert result.train.final_accuracy > clustered_acc + 0.01


def _one_step(model: nn.Module, reduce: str, lr: float) -> CentroidHook:
    hook = CentroidHook(assignments_from_model(model), reduce=reduce)  # type: ignore[arg-type]
    cfg = TrainConfig(epochs=1, lr=lr, momentum=0.0, weight_decay=0.0, schedule="constant")
    opt = build_optimizer(model, cfg)
    state = TrainState(model, opt, build_scheduler(opt, cfg, steps_per_epoch=1), cfg)
    hook.on_train_start(state)
    x = torch.randn(16, 4)
    model(x).pow(2).sum().backward()
    hook.before_step(state)
    opt.step()
    hook.after_step(state)
    return hook


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_centroid_moves_by_lr_times_cluster_gradient(reduce: str) -> None:
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, 0.0, -0.25, 0.5], [-0.25, 0.5, 0.0, -0.25]]))
    ref = nn.Linear(4, 2, bias=False)
    ref.weight.data.copy_(model.weight.data)
    torch.manual_seed(1)
    x = torch.randn(16, 4)
    ref(x).pow(2).sum().backward()
    g = ref.weight.grad
    assert g is not None
    labels = assignments_from_model(model)["weight"].labels.long()
    torch.manual_seed(1)
    hook = _one_step(model, reduce, lr=0.01)
    w = model.weight.detach()
    for c, value in enumerate([-0.25, 0.5]):
        members = labels == c
        step = g[members].sum() / (members.sum() if reduce == "mean" else 1)
        assert float(hook.assignments["weight"].codebook[c]) == pytest.approx(
            value - 0.01 * float(step), abs=1e-6
        )
        assert torch.unique(w[members]).numel() == 1
    assert float(w[0, 1]) == 0.0 and float(w[1, 2]) == 0.0


def test_errors_name_the_layer() -> None:
    model = nn.Sequential(nn.Linear(64, 64))
    with pytest.raises(ConfigError, match=r"layer '0' has \d+ distinct non-zero weights"):
        assignments_from_model(model, max_clusters=256)
    with pytest.raises(ConfigError, match="'nope' is not a module with a weight"):
        assignments_from_model(model, ["nope"])
    with pytest.raises(ConfigError, match="reduce must be 'sum' or 'mean'"):
        CentroidHook({}, reduce="max")  # type: ignore[arg-type]
    bad = {"0.weight": Assignment(torch.zeros(3, 3, dtype=torch.int16), torch.ones(1))}
    with pytest.raises(ConfigError, match=r"labels have shape \(3, 3\), the parameter has"):
        _one_step_hook(model, bad)
    with pytest.raises(ConfigError, match=r"'x\.weight' names no parameter"):
        _one_step_hook(model, {"x.weight": bad["0.weight"]})


def _one_step_hook(model: nn.Module, assignments: dict[str, Assignment]) -> None:
    cfg = TrainConfig(epochs=1)
    opt = build_optimizer(model, cfg)
    state = TrainState(model, opt, build_scheduler(opt, cfg, steps_per_epoch=1), cfg)
    CentroidHook(assignments).on_train_start(state)


def test_loss_terms_join_the_centroid_loss(digits: DataBundle) -> None:
    from torchshrink.train.hooks import loss_term

    model = _clustered(3)
    before = _distinct(model.fc1.weight)
    term = loss_term("l2", lambda m, x, y, logits: logits.pow(2).mean(), weight=0.1)
    cfg = TrainConfig(epochs=1, lr=0.01, batch_size=64, show_progress=False)
    r = finetune_centroids(model, digits, cfg, loss_terms=[term])
    assert r.train.history[0].loss_terms["l2"] > 0
    assert r.clusters["fc1.weight"] <= before <= 8


def test_unclustered_model_is_refused_naming_the_layer(digits: DataBundle) -> None:
    torch.manual_seed(0)
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    w = model.fc1.weight.detach()
    distinct = _distinct(w)
    assert distinct > 19_000  # float weights: (nearly) every one its own value
    cfg = TrainConfig(epochs=1, show_progress=False)
    with pytest.raises(ConfigError, match=rf"layer 'fc1' has {distinct} distinct .* among 19200"):
        finetune_centroids(model, digits, cfg)
    assert torch.equal(model.fc1.weight.detach(), w)  # refused before any training step


def test_four_bit_clusters_still_fine_tune() -> None:
    model = _clustered(4)
    small = torchshrink.load_data("digits", limit=128)
    r = finetune_centroids(model, small, TrainConfig(epochs=1, lr=0.01, show_progress=False))
    assert list(r.clusters) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert 1 < max(r.clusters.values()) <= 16


def test_a_cluster_report_sets_each_layer_limit_to_its_codebook() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32))  # 2048 weights
    report = cluster_weights(model, 12)  # 4096 centroids: every weight keeps its own value
    assert _distinct(model[0].weight) > 0.9 * 2048
    with pytest.raises(ConfigError, match=r"layer '0' has \d+ distinct .* among 2048"):
        assignments_from_model(model)  # no report: indistinguishable from an unclustered layer
    assert assignments_from_model(model, report)["0.weight"].clusters == _distinct(model[0].weight)
    four = cluster_weights(model, 2)  # at most 4 values; then spoil the sharing
    with torch.no_grad():
        model[0].weight.add_(torch.randn(32, 64) * 1e-3)
    spoiled = _distinct(model[0].weight)
    with pytest.raises(ConfigError, match=rf"layer '0' has {spoiled} distinct .*\(more than 4\)"):
        assignments_from_model(model, four)


def test_shared_biases_are_tuned_as_centroids(
    digits: DataBundle, trained: dict[str, torch.Tensor]
) -> None:
    torch.manual_seed(0)
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    model.load_state_dict(trained)
    with torch.no_grad():
        model.fc1.bias[:10] = 0.0  # zero biases stay zero, like pruned weights
    report = cluster_weights(model, {"fc1": 3, "fc2": 3}, bias_bits=2)  # fc3 not shared
    assert [(c.name, c.bias_bits) for c in report.layers] == [("fc1", 2), ("fc2", 2)]
    for layer in (model.fc1, model.fc2):
        assert torch.unique(layer.bias[layer.bias != 0]).numel() <= 4
    assert torch.unique(model.fc3.bias).numel() == 10  # exact: its layer was not clustered
    a = assignments_from_model(model, report)
    assert list(a) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert int((a["fc1.bias"].labels == -1).sum()) == 10
    before = a["fc1.bias"].codebook.clone()
    cfg = TrainConfig(epochs=1, lr=0.01, batch_size=64, show_progress=False)
    r = finetune_centroids(model, digits, cfg, assignments=a)
    assert r.clusters["fc1.bias"] <= 4 and r.clusters["fc2.bias"] <= 4
    assert not torch.equal(r.assignments["fc1.bias"].codebook, before)  # the centroids moved
    assert torch.equal(model.fc1.bias[:10], torch.zeros(10))
    values = set(model.fc1.bias[10:].tolist())
    assert values <= set(r.assignments["fc1.bias"].codebook.tolist())


def test_bias_bits_out_of_range_is_refused() -> None:
    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    with pytest.raises(ConfigError, match=r"bits must be an integer in 1\.\.16, got 0"):
        cluster_weights(model, 4, bias_bits=0)
