from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import (
    DataError,
    EmptyDataError,
    MissingDependencyError,
    TorchshrinkError,
    UnknownModelError,
    require,
)
from torchshrink.core.registry import Registry


def test_registry_lists_valid_names_on_miss() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("b")(2)
    reg.register("a")(1)
    assert reg.get("A") == 1
    assert reg.names() == ["a", "b"]
    with pytest.raises(UnknownModelError, match="unknown widget 'c'; valid names: a, b"):
        reg.get("c")


def test_registry_custom_error_and_duplicates() -> None:
    reg: Registry[int] = Registry("data kind", error=DataError)
    reg.register("x")(1)
    with pytest.raises(DataError, match="unknown data kind 'y'"):
        reg.get("y")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("X")(2)


def test_require_names_the_extra() -> None:
    with pytest.raises(MissingDependencyError, match=r"pip install 'torchshrink\[onnx\]'"):
        require("definitely_not_a_module_xyz", "onnx")
    assert require("math", "core").sqrt(4.0) == 2.0  # type: ignore[attr-defined]


def test_errors_share_a_base_and_exit_code() -> None:
    assert issubclass(EmptyDataError, DataError)
    assert issubclass(DataError, TorchshrinkError)
    assert TorchshrinkError.exit_code == 2


def _bundle(n_train: int, n_test: int) -> DataBundle:
    tr = TensorDataset(torch.randn(n_train, 1, 4, 4), torch.zeros(n_train, dtype=torch.long))
    te = TensorDataset(torch.randn(n_test, 1, 4, 4), torch.zeros(n_test, dtype=torch.long))
    return DataBundle("toy", tr, te, num_classes=2, input_shape=(1, 4, 4))


def test_databundle_rejects_empty_split() -> None:
    with pytest.raises(EmptyDataError, match="data 'toy': the test split has no samples"):
        _bundle(4, 0)


def test_databundle_calibration_is_seeded() -> None:
    b = _bundle(50, 5)
    a1 = b.calibration(10, seed=1).indices  # type: ignore[attr-defined]
    a2 = b.calibration(10, seed=1).indices  # type: ignore[attr-defined]
    a3 = b.calibration(10, seed=2).indices  # type: ignore[attr-defined]
    assert a1 == a2 and a1 != a3 and len(a1) == 10
    assert len(b.calibration(500)) == 50
    with pytest.raises(EmptyDataError, match="calibration size must be positive, got 0"):
        b.calibration(0)


def test_databundle_example_inputs_and_loader() -> None:
    b = _bundle(9, 3)
    assert b.example_inputs(2).shape == (2, 1, 4, 4)
    assert b.example_inputs(10).shape == (3, 1, 4, 4)
    batches = list(b.loader("train", batch_size=4))
    assert [len(x) for x, _ in batches] == [4, 4, 1]


def test_databundle_example_inputs_refuses_text() -> None:
    b = DataBundle("text:x", ["a b", "c"], ["d"], num_classes=None, input_shape=(), task="text")
    from torchshrink.core.errors import ShapeError

    with pytest.raises(ShapeError, match="holds text samples"):
        b.example_inputs(1)
