"""Small versions of the MNIST accuracy targets, on scikit-learn's digits (seconds, not minutes).

LeNet-300-100 (8x8 inputs) pruned to 8% of its weights (global magnitude, iterative with
fine-tuning) and LeNet-5 (digits upsampled to 16x16) with half of its channels and neurons
removed stay close to their dense baselines. The test split has 359 images (1 error = 0.28
points), so the margins are a few images.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from torchshrink.core.databundle import DataBundle
from torchshrink.core.zoo import create_zoo_model
from torchshrink.measure.accuracy import evaluate
from torchshrink.prune import PruneConfig, prune
from torchshrink.train import TrainConfig, train


def _upsampled(data: DataBundle, size: int) -> DataBundle:
    def up(ds: TensorDataset) -> TensorDataset:
        x, y = ds.tensors
        return TensorDataset(F.interpolate(x, size=(size, size), mode="bilinear"), y)

    return DataBundle("digits16", up(data.train), up(data.test), data.num_classes, (1, size, size))


def test_lenet300_keeps_its_accuracy_at_8_percent_of_the_weights(digits: DataBundle) -> None:
    torch.manual_seed(0)
    model = create_zoo_model("lenet300", input_size=8)
    train(model, digits, TrainConfig.preset("digits", epochs=12, show_progress=False))
    dense = evaluate(model, digits.test).error
    ft = TrainConfig.preset("digits", epochs=4, lr=0.05, warmup_epochs=0, show_progress=False)
    cfg = PruneConfig(ratio=0.92, global_=True, schedule="iterative", steps=3, finetune=ft)
    r = prune(model, cfg, example_inputs=digits.example_inputs(1), data=digits)
    pruned = evaluate(model, digits.test).error
    weights = [p for p in model.parameters() if p.dim() == 2]
    kept = sum(int((w != 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert kept == pytest.approx(0.08, abs=1e-4)  # biases stay dense
    assert [round(s.target, 4) for s in r.steps] == [0.5691, 0.8143, 0.92]
    print(f"lenet300 digits: dense {dense:.4f} pruned {pruned:.4f}")
    assert dense < 0.06
    # 8x8 digits have 64 inputs, far less redundant than MNIST's 784: 2 points (7 images).
    assert pruned - dense <= 0.02


def test_lenet5_keeps_its_accuracy_with_half_of_its_channels(digits: DataBundle) -> None:
    data = _upsampled(digits, 16)
    torch.manual_seed(0)
    model = create_zoo_model("lenet5", input_size=16)
    train(model, data, TrainConfig.preset("digits", epochs=6, show_progress=False))
    dense = evaluate(model, data.test).error
    ft = TrainConfig.preset("digits", epochs=3, lr=0.02, warmup_epochs=0, show_progress=False)
    r = prune(
        model,
        PruneConfig(granularity="channel", ratio=0.5, finetune=ft),
        example_inputs=data.example_inputs(1),
        data=data,
    )
    pruned = evaluate(model, data.test).error
    assert (model.conv1.out_channels, model.conv2.out_channels, model.fc1.out_features) == (
        10,
        25,
        250,
    )
    assert r.params_after < 0.3 * r.params_before
    print(f"lenet5 digits: dense {dense:.4f} pruned {pruned:.4f}")
    assert dense < 0.06
    assert pruned - dense <= 0.02
