"""The ``lenet-mnist`` preset reaches Deep Compression's LeNet-300-100 baseline (slow: minutes)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchshrink.core.data import load_data
from torchshrink.core.zoo import create_zoo_model
from torchshrink.train.config import TrainConfig
from torchshrink.train.loop import train


@pytest.mark.slow
def test_lenet300_preset_reaches_1_6_percent_error(mnist_path: Path) -> None:
    data = load_data(f"npz:{mnist_path}")
    torch.manual_seed(0)
    model = create_zoo_model("lenet300")
    result = train(
        model, data, TrainConfig.preset("lenet-mnist", show_progress=False, num_threads=2)
    )
    assert result.epochs_run == 15
    assert 1.0 - result.final_accuracy <= 0.016
