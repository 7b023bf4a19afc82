"""Pruner and prune(): schedules, structured allocation, layer removal and user errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ShapeError, UnsupportedLayerError
from torchshrink.core.zoo import create_zoo_model
from torchshrink.graph import dependency_groups
from torchshrink.prune import PruneConfig, Pruner, get_masks, prune, residual_blocks
from torchshrink.train.config import TrainConfig
from torchshrink.train.hooks import loss_term


def _mlp(width: int = 64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4)
    )


def test_agp_reaches_the_target_sparsity_on_the_scheduled_step() -> None:
    model = _mlp()
    cfg = PruneConfig(ratio=0.9, schedule="agp", agp_start_step=2, agp_end_step=12, agp_frequency=3)
    p = Pruner(model, cfg, example_inputs=torch.zeros(1, 16))
    seen = [p.step() for _ in range(14)]
    events = [r.step for r in p.history]
    assert events == [5, 8, 11, 12]  # at t0 = 2 the target is s_i = 0: nothing to do
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3, sampled at the events only.
    assert seen[4] == pytest.approx(0.9 * (1 - (1 - 3 / 10) ** 3))
    assert seen[10] < 0.9 and seen[11] == pytest.approx(0.9) and seen[13] == pytest.approx(0.9)
    assert get_masks(model).sparsity() == pytest.approx(0.9, abs=2e-3)
    assert [r.achieved for r in p.history] == sorted(r.achieved for r in p.history)


def test_iterative_targets_remove_the_same_fraction_of_what_is_left() -> None:
    p = Pruner(
        _mlp(),
        PruneConfig(ratio=0.92, schedule="iterative", steps=3),
        example_inputs=torch.zeros(1, 16),
    )
    assert [round(p.target(t), 4) for t in (1, 2, 3)] == [0.5691, 0.8143, 0.92]


def test_structured_round_to_and_min_channels_are_respected() -> None:
    model = _mlp(40)
    r = prune(
        model,
        PruneConfig(granularity="channel", ratio=0.7, round_to=8),
        example_inputs=torch.zeros(1, 16),
    )
    assert (model[0].out_features, model[2].out_features) == (16, 16)  # 12 rounded up to 16
    assert r.changes == {"0:out": [40, 16], "2:out": [40, 16]}
    model = _mlp(40)
    prune(
        model,
        PruneConfig(granularity="channel", ratio=0.95, min_channels=5),
        example_inputs=torch.zeros(1, 16),
    )
    assert (model[0].out_features, model[2].out_features) == (5, 5)


def test_structured_global_allocation_is_uneven_and_layer_ratios_override() -> None:
    model = _mlp(32)
    with torch.no_grad():
        model[2].weight.mul_(20)
        model[4].weight.mul_(20)  # layer 2's outputs are read by big weights: keep them
    prune(
        model,
        PruneConfig(granularity="channel", ratio=0.5, global_=True),
        example_inputs=torch.zeros(1, 16),
    )
    a, b = model[0].out_features, model[2].out_features
    assert a < 16 < b and a + b == 32
    model = _mlp(32)
    prune(
        model,
        PruneConfig(granularity="channel", ratio=0.5, layer_ratios={"2": 0.25}),
        example_inputs=torch.zeros(1, 16),
    )
    assert (model[0].out_features, model[2].out_features) == (16, 24)


def test_structured_agp_masks_channels_then_removes_them() -> None:
    model = _mlp(32)
    cfg = PruneConfig(
        granularity="channel", ratio=0.5, schedule="agp", agp_end_step=4, agp_frequency=2
    )
    p = Pruner(model, cfg, example_inputs=torch.zeros(1, 16))
    for _ in range(4):
        p.step()
    assert model[0].out_features == 32
    assert int((model[0].weight.abs().sum(1) == 0).sum()) == 16
    p.finish()
    assert (model[0].out_features, model[2].out_features) == (16, 16)
    assert get_masks(model) is None and model(torch.zeros(2, 16)).shape == (2, 4)


def test_layer_granularity_replaces_the_weakest_residual_blocks() -> None:
    model = create_zoo_model("resnet20", input_size=8).eval()
    x = model.example_inputs(2)
    blocks = residual_blocks(model, x)
    # The first block of stages 2 and 3 changes shape (strided option-A shortcut): not removable.
    assert blocks == [
        f"layer{s}.{i}" for s in (1, 2, 3) for i in range(3) if (s, i) not in ((2, 0), (3, 0))
    ]
    with torch.no_grad():
        model.layer1[1].conv1.weight.zero_()  # a block whose residual branch does nothing
        model.layer1[1].conv2.weight.zero_()
    r = prune(model, PruneConfig(granularity="layer", ratio=0.3), example_inputs=x)
    assert (
        sum(isinstance(m, nn.Identity) and n.count(".") == 1 for n, m in model.named_modules()) == 2
    )
    assert isinstance(model.layer1[1], nn.Identity) and r.changes["layer1.1"] == [1, 0]
    assert model(x).shape == (2, 10)


def test_head_granularity_removes_heads_only() -> None:
    model = create_zoo_model("vit", dim=48, depth=2, heads=4, input_size=16).eval()
    x = model.example_inputs(2)
    r = prune(model, PruneConfig(granularity="head", ratio=0.5), example_inputs=x)
    assert list(r.changes.values()) == [[4, 2], [4, 2]]
    assert all(g.size == 2 for g in dependency_groups(model, x) if g.unit == "head")
    assert model(x).shape == (2, 10)


class _Odd(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft(x).real  # no rule for channels through an FFT


def test_unsupported_layers_are_named() -> None:
    model = nn.Sequential(nn.Linear(4, 8), _Odd(), nn.Linear(8, 2))
    with pytest.raises(UnsupportedLayerError, match=r"'fft_fft' in module '1' \(_Odd\)"):
        prune(model, PruneConfig(granularity="channel"), example_inputs=torch.zeros(1, 4))
    with pytest.raises(UnsupportedLayerError, match="no layer of this Sequential supports"):
        prune(nn.Sequential(nn.ReLU()), PruneConfig(), example_inputs=torch.zeros(1, 4))
    with pytest.raises(UnsupportedLayerError, match=r"'1' \(ReLU\) has no weights"):
        prune(_mlp(), PruneConfig(layer_ratios={"1": 0.5}), example_inputs=torch.zeros(1, 16))
    with pytest.raises(UnsupportedLayerError, match="no removable residual block"):
        prune(_mlp(), PruneConfig(granularity="layer"), example_inputs=torch.zeros(1, 16))


def test_a_forward_that_fails_on_the_example_inputs_is_reported() -> None:
    with pytest.raises(ShapeError, match=r"module '0' \(Linear\) got input of shape \(1, 5\)"):
        prune(_mlp(), PruneConfig(), example_inputs=torch.zeros(1, 5))
    with pytest.raises(ShapeError, match="module '0'"):
        prune(_mlp(), PruneConfig(granularity="channel"), example_inputs=torch.zeros(1, 5))


def test_pruning_every_channel_of_a_layer_is_impossible() -> None:
    # ratio < 1 and min_channels >= 1: even 0.99 of 8 channels leaves one.
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    prune(model, PruneConfig(granularity="channel", ratio=0.99), example_inputs=torch.zeros(1, 4))
    assert model[0].out_features == 1
    tiny = nn.Sequential(nn.Linear(1, 2))
    prune(tiny, PruneConfig(ratio=0.9), example_inputs=torch.zeros(1, 1))
    assert int((tiny[0].weight != 0).sum()) == 1


def test_prune_adds_loss_terms_to_every_finetuning_round(digits: DataBundle) -> None:
    calls: list[int] = []

    def count(m: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return logits.sum() * 0.0

    torch.manual_seed(0)
    model = create_zoo_model("lenet300", input_size=8)
    ft = TrainConfig(epochs=1, lr=0.01, batch_size=128, show_progress=False)
    cfg = PruneConfig(ratio=0.8, schedule="iterative", steps=2, finetune=ft)
    r = prune(
        model,
        cfg,
        example_inputs=digits.example_inputs(1),
        data=digits,
        loss_terms=[loss_term("count", count)],
    )
    # Two rounds of one epoch each over the 1438 training images.
    assert sum(calls) == 2 * 1438
    assert r.sparsity == pytest.approx(0.8, abs=0.01)
