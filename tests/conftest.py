"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import torchshrink
from torchshrink.core.databundle import DataBundle

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


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    # The test models are tiny: a second intra-op thread only adds spin-waiting, and on a
    # shared 2-core machine it makes small tests tens of times slower. Benchmarks, not tests,
    # measure multi-threaded speed; tests that need a thread count set it themselves.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> DataBundle:
    """scikit-learn's 8x8 digits as a DataBundle (seed 0): 1438 train / 359 test images."""
    return torchshrink.load_data("digits")
