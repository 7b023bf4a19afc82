"""checked_forward: input conventions, ShapeError naming the failing layer, hooks cleaned up."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.core.errors import ShapeError
from torchshrink.core.forward import (
    batch_size_of,
    call_model,
    checked_forward,
    eval_mode,
    resize_batch,
)


def mlp28() -> nn.Sequential:
    return nn.Sequential(
        nn.Flatten(), nn.Sequential(nn.Linear(784, 32), nn.ReLU()), nn.Linear(32, 10)
    )


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.a(x) + self.b(y)  # (B, 3)


def test_mlp_for_28x28_fed_32x32_names_the_linear() -> None:
    with pytest.raises(ShapeError, match=r"module '1\.0' \(Linear\).*\(1, 1024\).*mat1 and mat2"):
        checked_forward(mlp28(), torch.zeros(1, 1, 32, 32))


def test_message_names_model_input_shape_and_original_error() -> None:
    with pytest.raises(ShapeError) as info:
        checked_forward(mlp28(), torch.zeros(2, 1, 32, 32))
    msg = str(info.value)
    assert "(2, 1, 32, 32)" in msg and "784x32" in msg
    assert isinstance(info.value.__cause__, RuntimeError)


def test_conv_channel_mismatch_names_conv() -> None:
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ShapeError, match=r"'0' \(Conv2d\).*3 channels"):
        checked_forward(m, torch.zeros(1, 1, 8, 8))


def test_tuple_and_dict_inputs() -> None:
    m = TwoInputs()
    x, y = torch.ones(2, 4), torch.ones(2, 5)
    assert checked_forward(m, (x, y)).shape == (2, 3)
    assert checked_forward(m, {"x": x, "y": y}).shape == (2, 3)
    with pytest.raises(ShapeError, match=r"module 'b' \(Linear\)"):
        checked_forward(m, {"x": x, "y": torch.ones(2, 6)})


def test_hooks_are_removed_after_success_and_failure() -> None:
    m = mlp28()
    checked_forward(m, torch.zeros(1, 1, 28, 28))
    with pytest.raises(ShapeError):
        checked_forward(m, torch.zeros(1, 1, 32, 32))
    counts = [len(mod._forward_pre_hooks) + len(mod._forward_hooks) for mod in m.modules()]
    assert counts == [0] * len(counts)


def test_other_errors_pass_through_unchanged() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match=r"^boom$"):
        checked_forward(Broken(), torch.zeros(1))


def test_batch_helpers_and_unknown_input_type() -> None:
    assert batch_size_of((torch.zeros(7, 2), torch.zeros(3))) == 7
    resized = resize_batch({"a": torch.arange(3).view(3, 1)}, 7)
    assert resized["a"].view(-1).tolist() == [0, 1, 2, 0, 1, 2, 0]
    with pytest.raises(TypeError, match="tensor, a tuple"):
        call_model(nn.Identity(), 3)


def test_eval_mode_restores_mixed_modes() -> None:
    m = nn.Sequential(nn.BatchNorm1d(2), nn.Dropout()).train()
    m[0].eval()
    with eval_mode(m):
        assert [x.training for x in m.modules()] == [False, False, False]
    assert [x.training for x in m.modules()] == [True, False, True]
