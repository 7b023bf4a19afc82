"""Schedules and per-layer ratio maps: a map with ``ratio=0`` prunes on its own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.prune import PruneConfig, Pruner, get_masks, prune
from torchshrink.prune.schedules import final_sparsity, scaled_ratio, schedule_target


def _mlp(width: int = 64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4)
    )


def _sparsity(model: nn.Module) -> list[float]:
    return [round(float((m.weight == 0).float().mean()), 4) for m in model if hasattr(m, "weight")]


def test_final_sparsity_is_the_ratio_or_the_largest_map_entry() -> None:
    assert final_sparsity(PruneConfig(ratio=0.8, layer_ratios={"a": 0.95})) == 0.8
    assert final_sparsity(PruneConfig(ratio=0, layer_ratios={"a": 0.3, "b": 0.9})) == 0.9
    assert final_sparsity(PruneConfig(ratio=0)) == 0.0
    assert final_sparsity(PruneConfig(granularity="layer", ratio=0, layer_ratios={"a": 0.5})) == 0
    cfg = PruneConfig(ratio=0, layer_ratios={"a": 0.9, "b": 0.45}, schedule="iterative", steps=3)
    assert [round(schedule_target(cfg, t), 4) for t in (1, 2, 3, 4)] == [0.5358, 0.7846, 0.9, 0.9]
    assert scaled_ratio(cfg, 0.45, 0.9) == pytest.approx(0.45)


def test_a_layer_map_with_ratio_zero_prunes_only_the_named_layers() -> None:
    model = _mlp()
    prune(
        model,
        PruneConfig(ratio=0, layer_ratios={"0": 0.75, "4": 0.5}),
        example_inputs=torch.zeros(1, 16),
    )
    assert _sparsity(model) == [0.75, 0.0, 0.5]


def test_a_layer_map_alone_follows_the_iterative_schedule_to_each_ratio() -> None:
    model = _mlp()
    cfg = PruneConfig(ratio=0, layer_ratios={"0": 0.9, "2": 0.45}, schedule="iterative", steps=3)
    p = Pruner(model, cfg, example_inputs=torch.zeros(1, 16))
    p.step()
    # Step 1 reaches 0.5358 of the largest entry (0.9): each layer in proportion (whole weights).
    assert _sparsity(model) == pytest.approx([0.5358, 0.45 * 0.5358 / 0.9, 0.0], abs=1 / 1024)
    p.step()
    p.step()
    assert _sparsity(p.finish()) == pytest.approx([0.9, 0.45, 0.0], abs=1e-3)


def test_a_layer_map_alone_reaches_its_ratios_at_the_agp_end_step() -> None:
    model = _mlp()
    cfg = PruneConfig(
        ratio=0, layer_ratios={"0": 0.8}, schedule="agp", agp_end_step=10, agp_frequency=2
    )
    p = Pruner(model, cfg, example_inputs=torch.zeros(1, 16))
    seen = [p.step() for _ in range(10)]
    assert seen[5] == pytest.approx(
        0.8 * (1 - 0.4**3)
    )  # t = 6, an event and seen[9] == pytest.approx(0.8)
    assert get_masks(model).sparsity() == pytest.approx(0.8 * 1024 / (1024 + 4096 + 256), abs=1e-3)
    assert _sparsity(model) == pytest.approx([0.8, 0.0, 0.0], abs=1e-3)


def test_a_nonzero_ratio_with_a_map_behaves_as_before() -> None:
    model = _mlp()
    cfg = PruneConfig(ratio=0.8, layer_ratios={"0": 0.4}, schedule="iterative", steps=2)
    p = Pruner(model, cfg, example_inputs=torch.zeros(1, 16))
    p.step()
    # Exactly the masks of the code before ratio=0 maps were supported (layer 0 at half of the
    # global schedule's first step, 1 - 0.2 ** 0.5 = 0.5528, in whole weights).
    assert _sparsity(model) == [0.2764, 0.5527, 0.5547]
    p.step()
    assert _sparsity(model) == pytest.approx([0.4, 0.8, 0.8], abs=1e-3)


def test_structured_maps_work_alone_and_over_iterative_steps() -> None:
    model = _mlp(40)
    cfg = PruneConfig(granularity="channel", ratio=0, layer_ratios={"0": 0.5})
    prune(model, cfg, example_inputs=torch.zeros(1, 16))
    assert (model[0].out_features, model[2].out_features) == (20, 40)
    # A layer ratio below the global one: each physical step removes a share of what is left,
    # measured against that layer's own previous ratio (not the global one).
    model = _mlp(40)
    cfg = PruneConfig(
        granularity="channel", ratio=0.9, layer_ratios={"0": 0.5}, schedule="iterative", steps=3
    )
    prune(model, cfg, example_inputs=torch.zeros(1, 16))
    assert model[0].out_features in (19, 20) and model[2].out_features == 4  # whole channels


def test_agp_initial_sparsity_is_checked_against_the_map_when_ratio_is_zero() -> None:
    cfg = PruneConfig(ratio=0, layer_ratios={"0": 0.8}, schedule="agp", initial_sparsity=0.5)
    assert final_sparsity(cfg) == 0.8
    with pytest.raises(ValueError, match=r"initial_sparsity \(0.9\) must not exceed ratio \(0.8\)"):
        PruneConfig(ratio=0, layer_ratios={"0": 0.8}, schedule="agp", initial_sparsity=0.9)
