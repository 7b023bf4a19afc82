"""train() tries one batch before training: a model that cannot take the data fails by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import torchshrink
import torchshrink.train.loop as loop
from torchrun_helper import run_torchrun
from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ShapeError
from torchshrink.train import TrainConfig, train
from torchshrink.train.input_check import check_training_data, probe_forward

WORKER = Path(__file__).with_name("ddp_shape_worker.py")


def cfg(**kw: object) -> TrainConfig:
    return TrainConfig(epochs=1, batch_size=64, show_progress=False, num_threads=1, **kw)  # type: ignore[arg-type]


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class RunningMax(nn.Module):
    """Records the largest input seen in a buffer on every call, in any mode (like an observer)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen_max", torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_max = torch.maximum(self.seen_max, x.detach().max())
        return x


class Noise(nn.Module):
    """Adds noise in any mode: a model that draws random numbers even in eval mode."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.01 * torch.randn_like(x)  # (B, ...)


def noisy_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),  # (B, 8, 8, 8)
        nn.BatchNorm2d(8),
        RunningMax(),
        Noise(),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),
    )


def test_resnet20_with_three_channels_on_digits_names_the_layer_and_shapes(
    digits: DataBundle,
) -> None:
    m = torchshrink.load_model("zoo:resnet20", model_args={"input_size": 8})
    before = snapshot(m)
    with pytest.raises(
        ShapeError,
        match=r"^train: data 'digits' does not fit the model: input does not fit the model: "
        r"module 'conv1' \(Conv2d\) got input of shape \(2, 1, 8, 8\) \(model input "
        r"\(2, 1, 8, 8\)\): .*expected input\[2, 1, 8, 8\] to have 3 channels, but got 1",
    ):
        train(m, digits, cfg())
    assert same(before, snapshot(m)) and m.training


def test_too_few_logits_for_the_classes_is_refused_before_training(digits: DataBundle) -> None:
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(
        ShapeError,
        match=r"^train: the model gives logits of shape \(2, 5\) for data 'digits' inputs of "
        r"shape \(2, 1, 8, 8\); cross-entropy needs \(2, K\) with K >= 10",
    ):
        train(m, digits, cfg())
    check_training_data(nn.Sequential(nn.Flatten(), nn.Linear(64, 12)), digits)  # K > 10 is fine


def test_probe_leaves_flags_buffers_and_rng_as_they_were() -> None:
    m = noisy_cnn(0).train()
    m[1].eval()  # a frozen BatchNorm inside a training model: mixed modes must survive
    flags = [mod.training for mod in m.modules()]
    before = snapshot(m)
    x = torch.randn(2, 1, 8, 8) * 5
    out = probe_forward(m, x)
    assert out.shape == (2, 10) and not out.requires_grad
    assert same(before, snapshot(m))  # seen_max, BN statistics and num_batches_tracked
    assert [mod.training for mod in m.modules()] == flags


def test_training_results_are_those_of_a_run_without_the_check(
    digits: DataBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dropout, shuffling, a buffer updated on every call and noise drawn in eval mode: the check
    # must leave all of them where the run without it (the loop before the check existed) has
    # them.
    config = cfg(seed=3)
    a, b = noisy_cnn(1), noisy_cnn(1)
    rng = torch.get_rng_state()
    ra = train(a, digits, config)
    assert torch.equal(rng, torch.get_rng_state())  # the caller's RNG is untouched
    monkeypatch.setattr(loop, "check_training_data", lambda *args, **kw: None)
    rb = train(b, digits, config)
    assert same(snapshot(a), snapshot(b))
    assert ra.history[0].train_loss == rb.history[0].train_loss
    assert ra.final_accuracy == rb.final_accuracy > 0.5


@pytest.mark.integration
def test_under_torchrun_every_rank_refuses_the_misfit_by_itself(tmp_path: Path) -> None:
    out = tmp_path / "ranks"
    out.mkdir()
    proc = run_torchrun([str(WORKER), str(out)], timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    for r in ranks:
        assert r["error"].startswith("train: data 'digits' does not fit the model: ")
        assert "module 'conv1' (Conv2d) got input of shape (2, 1, 8, 8)" in r["error"]
    # Training after the refusal is still data-parallel: both ranks end with the same weights.
    assert ranks[0]["weight_hash"] == ranks[1]["weight_hash"]
    assert ranks[0]["accuracy"] > 0.5
