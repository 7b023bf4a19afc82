"""Unstructured and N:M masks: exact patterns, global vs local, kept through training, baked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import torchshrink
from torchshrink.core.databundle import DataBundle
from torchshrink.prune import PruneConfig, Pruner, bake_masks, get_masks
from torchshrink.prune.masks import magnitude_masks, nm_layout, nm_mask
from torchshrink.train import TrainConfig, train


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return torchshrink.load_data("digits", limit=400)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_nm_masks_follow_the_pattern_exactly_on_linear_and_conv(n: int, m: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, 8))
    cfg = PruneConfig(granularity="nm", n=n, m=m)
    Pruner(model, cfg, example_inputs=torch.zeros(1, 8, 6, 6)).step()
    for w in (model[0].weight, model[3].weight):
        blocks = nm_layout(w.detach()).reshape(w.shape[0], -1, m)  # (out, K/m, m)
        zeros = (blocks == 0).sum(-1)
        assert int(zeros.min()) >= m - n
        assert float((w == 0).float().mean()) == pytest.approx(1 - n / m)
    # Conv blocks run along input channels: a block is 4 (or 8) channels at one kernel tap.
    mask = nm_mask(torch.rand(2, 8, 3, 3), 2, 4)
    assert mask.shape == (2, 8, 3, 3)
    assert mask.reshape(2, 2, 4, 3, 3).sum(2).eq(2).all()


def test_nm_leaves_layers_whose_inputs_are_not_a_multiple_of_m_dense() -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    p = Pruner(model, PruneConfig(granularity="nm"), example_inputs=torch.zeros(1, 6))
    p.step()
    assert int((model[0].weight == 0).sum()) == 0
    assert int((model[2].weight == 0).sum()) == 8
    assert p.notes == ["0.weight: input size not a multiple of m=4; left dense"]


def test_global_allocation_prunes_layers_unevenly_local_evenly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    with torch.no_grad():
        model[2].weight.mul_(10)  # the second layer's weights are all larger
    local, glob = (
        Pruner(
            nn.Sequential(*[m for m in _copy(model)]),
            PruneConfig(ratio=0.5, global_=g),
            example_inputs=torch.zeros(1, 32),
        )
        for g in (False, True)
    )
    local.step()
    glob.step()
    sp = lambda p: [float((p.model[i].weight == 0).float().mean()) for i in (0, 2)]  # noqa: E731
    assert sp(local) == [0.5, 0.5]
    g0, g2 = sp(glob)
    assert g0 > 0.9 and g2 < 0.1 and (g0 + g2) / 2 == pytest.approx(0.5)


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def test_magnitude_masks_never_empty_a_layer_and_keep_pruned_weights_pruned() -> None:
    scores = {"a": torch.tensor([0.1, 0.2]), "b": torch.tensor([5.0, 6, 7, 8])}
    masks = magnitude_masks(scores, {}, global_ratio=0.6)
    assert masks["a"].sum() == 1 and masks["a"][1]
    local = magnitude_masks({"a": torch.tensor([float("-inf"), 9, 1, 2])}, {"a": 0.25})
    assert local["a"].tolist() == [False, True, True, True]


def test_masks_stay_zero_through_finetuning_and_bake_makes_them_permanent(
    digits: DataBundle,
) -> None:
    model = _mlp()
    p = Pruner(model, PruneConfig(ratio=0.8), example_inputs=digits.example_inputs(2))
    p.step()
    zero = model[1].weight == 0
    assert float(zero.float().mean()) == pytest.approx(0.8, abs=1e-3)
    cfg = TrainConfig(epochs=6, lr=0.1, show_progress=False, batch_size=32)
    r = train(model, digits, cfg, hooks=[p.hook()])
    assert bool((model[1].weight[zero] == 0).all())
    assert r.final_accuracy > 0.8  # still learns with 80% of the first layer gone
    # Without the hook, training would move pruned weights: the masks are what keeps them at 0.
    free = _mlp()
    Pruner(free, PruneConfig(ratio=0.8), example_inputs=digits.example_inputs(2)).step()
    z2 = free[1].weight == 0
    train(free, digits, cfg.model_copy(update={"epochs": 1}))
    assert int((free[1].weight[z2] != 0).sum()) > 0
    baked = bake_masks(model)
    assert get_masks(baked) is None
    assert bool((model[1].weight[zero] == 0).all())
    assert "_torchshrink_masks" not in model.__dict__
