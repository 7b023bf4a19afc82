"""Checkpoints: resume reaches the same weights as an uninterrupted run; files load safely."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ModelFileError
from torchshrink.train.checkpoint import checkpoint_path, load_checkpoint
from torchshrink.train.config import TrainConfig
from torchshrink.train.hooks import TrainHook, TrainState
from torchshrink.train.loop import train

Factory = Callable[..., nn.Module]

if TYPE_CHECKING:
    from conftest import HostilePickle


class Interrupt(TrainHook):
    """Ends training after ``after`` epochs, as a killed job would (its checkpoint is written)."""

    def __init__(self, after: int) -> None:
        self.after = after

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch + 1 >= self.after:
            state.should_stop = True


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(ta, tb, rtol=0, atol=0, msg=name)


def test_resume_reaches_the_uninterrupted_weights(
    digits: DataBundle, make_cnn: Factory, tmp_path: Path
) -> None:
    # Warm-up + cosine, dropout, augmentation, BatchNorm and momentum: every piece of state counts.
    cfg = TrainConfig(
        epochs=2, batch_size=128, lr=0.05, nesterov=True, warmup_epochs=1, augment="shift2",
        show_progress=False,
    )  # fmt: skip
    straight = make_cnn(0)
    full = train(straight, digits, cfg)

    ckpt = TrainConfig(**{**cfg.model_dump(), "checkpoint_dir": tmp_path})
    first = train(make_cnn(0), digits, ckpt, hooks=[Interrupt(1)])
    assert first.epochs_run == 1 and first.stopped_early
    assert load_checkpoint(tmp_path).epochs_done == 1  # type: ignore[union-attr]

    resumed = make_cnn(5)  # different init: the checkpoint must supply the weights
    second = train(resumed, digits, TrainConfig(**{**ckpt.model_dump(), "resume": True}))
    assert second.epochs_run == 2 and not second.stopped_early
    assert_same_weights(straight, resumed)
    assert second.final_accuracy == full.final_accuracy
    assert [h.test_accuracy for h in second.history] == [h.test_accuracy for h in full.history]


def test_extending_a_constant_schedule_run(
    digits: DataBundle, make_mlp: Factory, tmp_path: Path
) -> None:
    base: dict[str, Any] = {"schedule": "constant", "lr": 0.05, "show_progress": False}
    straight = make_mlp(0)
    train(straight, digits, TrainConfig(epochs=2, **base))
    part = make_mlp(0)
    train(part, digits, TrainConfig(epochs=1, checkpoint_dir=tmp_path, **base))
    train(part, digits, TrainConfig(epochs=2, checkpoint_dir=tmp_path, resume=True, **base))
    assert_same_weights(straight, part)


def test_checkpoint_contents_and_resume_without_checkpoint(
    digits: DataBundle, make_mlp: Factory, tmp_path: Path
) -> None:
    cfg = TrainConfig(epochs=1, checkpoint_dir=tmp_path / "new", resume=True, show_progress=False)
    result = train(make_mlp(0), digits, cfg)  # nothing to resume: starts fresh
    snap = load_checkpoint(tmp_path / "new")
    assert snap is not None and result.epochs_run == 1
    assert (snap.epochs_done, snap.global_step, len(snap.history)) == (1, 11, 1)
    assert snap.best_accuracy == pytest.approx(result.history[0].test_accuracy)
    assert set(snap.rng) == {"torch"}
    assert not checkpoint_path(tmp_path / "new").with_suffix(".tmp").exists()


def test_early_stopped_run_stays_stopped(
    digits: DataBundle, make_mlp: Factory, tmp_path: Path
) -> None:
    cfg = TrainConfig(
        epochs=6, lr=1e-9, early_stop_patience=1, checkpoint_dir=tmp_path, show_progress=False
    )
    assert train(make_mlp(0), digits, cfg).epochs_run == 2
    again = train(make_mlp(0), digits, TrainConfig(**{**cfg.model_dump(), "resume": True}))
    assert again.epochs_run == 2 and again.stopped_early


def test_checkpoint_of_another_model_is_refused(
    digits: DataBundle, make_mlp: Factory, tmp_path: Path
) -> None:
    train(make_mlp(0), digits, TrainConfig(epochs=1, checkpoint_dir=tmp_path, show_progress=False))
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ModelFileError, match="does not fit"):
        train(
            other,
            digits,
            TrainConfig(epochs=2, checkpoint_dir=tmp_path, resume=True, show_progress=False),
        )


def test_corrupt_or_pickled_checkpoints_are_refused(tmp_path: Path, hostile: HostilePickle) -> None:
    checkpoint_path(tmp_path).write_bytes(
        pickle.dumps({"format_version": 1, "x": hostile}, protocol=2)
    )
    with pytest.raises(ModelFileError, match="cannot be read safely"):
        load_checkpoint(tmp_path)
    assert not hostile.marker.exists()
    torch.save({"something": torch.zeros(1)}, checkpoint_path(tmp_path))
    with pytest.raises(ModelFileError, match="not a torchshrink training checkpoint"):
        load_checkpoint(tmp_path)
    checkpoint_path(tmp_path).write_bytes(b"\x00" * 10)
    with pytest.raises(ModelFileError, match=r"last\.ckpt"):
        load_checkpoint(tmp_path)
