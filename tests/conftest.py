"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

MNIST_PATH = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"


@pytest.fixture
def mnist_path() -> Path:
    """Path to the offline MNIST copy; tests that need it skip where it is absent."""
    if not MNIST_PATH.exists():
        pytest.skip(f"MNIST not available at {MNIST_PATH} (the shared data folder is absent)")
    return MNIST_PATH


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
