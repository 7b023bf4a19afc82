"""The teacher is checked against the student on one batch before any training step."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError, ShapeError
from torchshrink.distill import DistillConfig, Teacher, check_teacher, distill
from torchshrink.train import TrainConfig, train


def mlp(classes: int, seed: int, *, hidden: int = 16) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def cfg(*, epochs: int = 1) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=64, show_progress=False, num_threads=1)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Broken(nn.Module):
    """A teacher whose forward fails for a reason that has nothing to do with shapes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("weights were never loaded")


def test_teacher_with_other_classes_is_refused_before_any_student_weight_changes(
    digits: DataBundle,
) -> None:
    student = mlp(10, seed=0)
    before = snapshot(student)
    t = Teacher(mlp(5, seed=1), cache=True)
    with pytest.raises(
        ConfigError,
        match=r"^teacher: gives logits of shape \(2, 5\), the student gives \(2, 10\); "
        "the teacher must predict the same classes",
    ):
        distill(student, t, digits, DistillConfig(cache=True), train_config=cfg())
    assert same(before, snapshot(student))
    assert student.training is True  # the check's eval mode was undone
    assert t.cached_samples == 0  # refused before the teacher's pass over the training set


def test_ensemble_names_the_member_that_does_not_fit(digits: DataBundle) -> None:
    student = mlp(10, seed=0)
    before = snapshot(student)
    good, other = mlp(10, seed=1), mlp(5, seed=2)
    with pytest.raises(ConfigError, match=r"^teacher 2: gives logits of shape \(2, 5\)"):
        distill(student, [good, good, other], digits, train_config=cfg())
    # A member that cannot take the inputs: its own error (naming its layer) is included.
    narrow = nn.Sequential(nn.Flatten(), nn.Linear(32, 10))
    with pytest.raises(
        ConfigError,
        match=r"^teacher 1: does not run on the student's inputs \(2, 1, 8, 8\): input does not "
        r"fit the model: module '1' \(Linear\) got input of shape \(2, 64\).*mat1 and mat2",
    ):
        distill(student, [good, narrow], digits, train_config=cfg())
    assert same(before, snapshot(student))


def test_a_teacher_failing_for_any_reason_is_named_with_its_message() -> None:
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(
        ConfigError, match=r"^teacher: does not run on the student's inputs.*never loaded"
    ):
        check_teacher(Broken(), mlp(10, seed=0), x)
    student = mlp(10, seed=0)
    with pytest.raises(ConfigError, match=r"^teacher 1: is the student itself"):
        check_teacher([mlp(10, seed=1), student], student, x)
    # The pipeline's wording: the message calls the student "the model".
    with pytest.raises(ConfigError, match=r"the model gives \(2, 10\)"):
        check_teacher(mlp(3, seed=1), student, x, student_name="model")


def test_a_student_that_does_not_take_the_inputs_names_its_layer() -> None:
    wide = nn.Sequential(nn.Flatten(), nn.Linear(49, 10))
    with pytest.raises(ShapeError, match=r"module '1' \(Linear\) got input of shape \(2, 64\)"):
        check_teacher(mlp(10, seed=1), wide, torch.zeros(2, 1, 8, 8))


def test_the_check_changes_nothing() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten(), nn.Linear(144, 10)
    ).train()
    teacher = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10))
    s0, t0 = snapshot(student), snapshot(teacher)
    x = torch.randn(2, 1, 8, 8)
    rng = torch.get_rng_state()
    t = check_teacher(teacher, student, x, cache=True)
    assert isinstance(t, Teacher) and t.cache_enabled and t.members == (teacher,)
    assert same(s0, snapshot(student)) and same(t0, snapshot(teacher))
    assert student.training and all(m.training for m in student.modules())
    assert torch.equal(rng, torch.get_rng_state())  # no random number drawn (dropout is off)
    assert t.cache_hits == 0 and t.cache_misses == 0


def test_a_good_teacher_still_trains_the_student(digits: DataBundle) -> None:
    teacher = mlp(10, seed=1, hidden=32)
    train(teacher, digits, cfg(epochs=3))
    student = mlp(10, seed=0)
    t_before, s_before = snapshot(teacher), snapshot(student)
    ensemble = [teacher, copy.deepcopy(teacher)]
    result = distill(student, ensemble, digits, train_config=cfg(epochs=3))
    assert result.epochs_run == 3 and result.history[0].loss_terms["kd"] > 0
    assert not same(s_before, snapshot(student))  # the student learned
    assert same(t_before, snapshot(teacher))  # the teacher did not
    assert result.final_accuracy > 0.5  # measured 0.91 (random is 0.1)
