"""Real small data and models for the training tests: scikit-learn's digits, a tiny MLP / CNN."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchshrink.core.databundle import DataBundle


@pytest.fixture(scope="session")
def digits() -> DataBundle:
    """The 1797 real 8x8 digits: 1400 train / 397 test, x (N, 1, 8, 8) normalised, y long."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.tensor(raw.target, dtype=torch.long)  # (N,)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    mean, std = float(x[:1400].mean()), float(x[:1400].std())
    x = (x - mean) / std
    return DataBundle(
        "digits",
        TensorDataset(x[:1400], y[:1400]),
        TensorDataset(x[1400:], y[1400:]),
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=(mean,),
        std=(std,),
    )


def _mlp(seed: int = 0, *, dropout: float = 0.0) -> nn.Module:
    """64 -> 64 -> 10 MLP, initialised from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 10)
    )


def _cnn(seed: int = 0) -> nn.Module:
    """Conv 1->8 + BatchNorm + ReLU + Dropout2d + Linear, initialised from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),  # (B, 8, 8, 8)
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout2d(0.1),
        nn.MaxPool2d(2),  # (B, 8, 4, 4)
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )


@pytest.fixture
def make_mlp() -> Callable[..., nn.Module]:
    """Factory of the tiny MLP: ``make_mlp(seed, dropout=0.0)``."""
    return _mlp


@pytest.fixture
def make_cnn() -> Callable[..., nn.Module]:
    """Factory of the tiny CNN with BatchNorm and Dropout2d: ``make_cnn(seed)``."""
    return _cnn
