"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import torchshrink
from testmodels import SmallCNN
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


@pytest.fixture(scope="session")
def digits_cnn(digits: DataBundle) -> nn.Module:
    """A :class:`SmallCNN` trained 4 epochs on digits, shared by the session: copy it before
    changing it."""
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(4):
        model.train()
        for x, y in digits.loader("train", batch_size=64, seed=epoch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


class HostilePickle:
    """Unpickling this would run a shell command that creates ``marker``: loaders must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def hostile(tmp_path: Path) -> HostilePickle:
    """A :class:`HostilePickle` whose marker file lives in ``tmp_path`` (and must never appear)."""
    return HostilePickle(tmp_path / "pwned")
