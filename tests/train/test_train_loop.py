"""The training loop on real digits: learning, regularisation options, hooks, loss terms, seeds."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch
from rich.console import Console
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError, DataError, ShapeError
from torchshrink.measure.accuracy import evaluate
from torchshrink.train.augment import random_shift
from torchshrink.train.config import TrainConfig
from torchshrink.train.hooks import TrainHook, TrainState, loss_term
from torchshrink.train.loop import EpochRecord, train
from torchshrink.train.progress import EpochProgress

Factory = Callable[..., nn.Module]
QUIET = {"show_progress": False}


def params_of(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_accuracy_rises_above_90_percent(digits: DataBundle, make_mlp: Factory) -> None:
    model = make_mlp(0)
    before = evaluate(model, digits.test).accuracy
    result = train(model, digits, TrainConfig.preset("digits", epochs=5, **QUIET))
    assert before < 0.3
    assert result.final_accuracy > 0.9
    assert result.model is model
    assert evaluate(model, digits.test).accuracy == pytest.approx(result.final_accuracy)
    assert result.epochs_run == 5 and not result.stopped_early
    assert result.best_accuracy >= result.final_accuracy
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.to_dict()["history"][0]["epoch"] == 0


def test_history_lr_follows_schedule(digits: DataBundle, make_mlp: Factory) -> None:
    cfg = TrainConfig(
        epochs=2, lr=0.1, schedule="step", step_size=1, gamma=0.5, batch_size=100, **QUIET
    )
    hist = train(make_mlp(0), digits, cfg).history
    assert [h.lr for h in hist] == pytest.approx([0.1, 0.05])


def test_label_smoothing_raises_the_loss(digits: DataBundle, make_mlp: Factory) -> None:
    plain = train(make_mlp(0), digits, TrainConfig(epochs=2, **QUIET)).history[-1].train_loss
    smooth = train(make_mlp(0), digits, TrainConfig(epochs=2, label_smoothing=0.3, **QUIET))
    assert smooth.history[-1].train_loss > plain + 0.1


class GradNorm(TrainHook):
    """Records the global gradient norm the optimizer is about to use."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.unclipped: list[float | None] = []

    def before_step(self, state: TrainState) -> None:
        grads = [p.grad.norm() for p in state.model.parameters() if p.grad is not None]
        self.norms.append(float(torch.stack(grads).norm()))
        self.unclipped.append(state.grad_norm)


def test_grad_clip_bounds_the_gradient_norm(digits: DataBundle, make_mlp: Factory) -> None:
    free, clipped = GradNorm(), GradNorm()
    train(make_mlp(0), digits, TrainConfig(epochs=1, **QUIET), hooks=[free])
    train(make_mlp(0), digits, TrainConfig(epochs=1, grad_clip=0.1, **QUIET), hooks=[clipped])
    assert max(free.norms) > 0.5
    assert free.unclipped[0] is None
    assert max(clipped.norms) <= 0.1 + 1e-5
    assert max(n for n in clipped.unclipped if n is not None) > 0.1


def test_dropout_option_sets_every_dropout_p(digits: DataBundle, make_cnn: Factory) -> None:
    model = nn.Sequential(make_cnn(0), nn.Dropout(0.5))
    train(model, digits, TrainConfig(epochs=0, dropout=0.25, **QUIET))
    ps = [m.p for m in model.modules() if isinstance(m, (nn.Dropout, nn.Dropout2d))]
    assert ps == [0.25, 0.25]
    keep = make_cnn(0)
    train(keep, digits, TrainConfig(epochs=0, **QUIET))
    assert next(m.p for m in keep.modules() if isinstance(m, nn.Dropout2d)) == 0.1
    with pytest.warns(UserWarning, match="no dropout layer"):
        train(
            nn.Sequential(nn.Flatten(), nn.Linear(64, 10)),
            digits,
            TrainConfig(epochs=0, dropout=0.1, **QUIET),
        )


def test_early_stop_with_tiny_lr(digits: DataBundle, make_mlp: Factory) -> None:
    cfg = TrainConfig(epochs=10, lr=1e-9, early_stop_patience=1, **QUIET)
    result = train(make_mlp(0), digits, cfg)
    assert result.epochs_run == 2
    assert result.stopped_early


def test_eval_every_and_zero_epochs(digits: DataBundle, make_mlp: Factory) -> None:
    hist = train(make_mlp(0), digits, TrainConfig(epochs=3, eval_every=2, **QUIET)).history
    assert [h.test_accuracy is None for h in hist] == [True, False, False]
    model = make_mlp(0)
    result = train(model, digits, TrainConfig(epochs=0, **QUIET))
    assert result.epochs_run == 0 and result.history == ()
    assert result.final_accuracy == pytest.approx(evaluate(model, digits.test).accuracy)


class Counter(TrainHook):
    def __init__(self) -> None:
        self.calls = {"start": 0, "before": 0, "after": 0, "epoch": 0, "end": 0}
        self.global_steps: list[int] = []
        self.losses: list[float] = []

    def on_train_start(self, state: TrainState) -> None:
        self.calls["start"] += 1

    def before_step(self, state: TrainState) -> None:
        self.calls["before"] += 1

    def after_step(self, state: TrainState) -> None:
        self.calls["after"] += 1
        self.global_steps.append(state.global_step)
        self.losses.append(state.loss)

    def on_epoch_end(self, state: TrainState) -> None:
        self.calls["epoch"] += 1
        assert isinstance(state.history[-1], EpochRecord)

    def on_train_end(self, state: TrainState) -> None:
        self.calls["end"] += 1


def test_hooks_are_called_the_right_number_of_times(digits: DataBundle, make_mlp: Factory) -> None:
    hook = Counter()
    train(make_mlp(0), digits, TrainConfig(epochs=2, batch_size=100, **QUIET), hooks=[hook])
    # 1400 training samples / 100 = 14 steps per epoch
    assert hook.calls == {"start": 1, "before": 28, "after": 28, "epoch": 2, "end": 1}
    assert hook.global_steps == list(range(28))
    assert all(loss > 0 for loss in hook.losses)


class StopNow(TrainHook):
    def on_epoch_end(self, state: TrainState) -> None:
        state.should_stop = True


def test_hook_can_stop_training(digits: DataBundle, make_mlp: Factory) -> None:
    result = train(make_mlp(0), digits, TrainConfig(epochs=5, **QUIET), hooks=[StopNow()])
    assert result.epochs_run == 1 and result.stopped_early


def weight_norm(model: nn.Module) -> float:
    return float(sum(p.detach().pow(2).sum() for n, p in model.named_parameters() if "weight" in n))


def test_loss_term_contributes(digits: DataBundle, make_mlp: Factory) -> None:
    cfg = TrainConfig(epochs=3, weight_decay=0.0, **QUIET)
    plain = make_mlp(0)
    train(plain, digits, cfg)
    l2 = loss_term(
        "l2", lambda m, x, y, logits: sum(p.pow(2).sum() for p in m.parameters()), weight=5e-2
    )
    reg = make_mlp(0)
    result = train(reg, digits, cfg, loss_terms=[l2])
    assert weight_norm(reg) < 0.8 * weight_norm(plain)
    assert result.history[0].loss_terms["l2"] > 0
    assert result.final_accuracy > 0.85


def test_bad_loss_terms_and_data(digits: DataBundle, make_mlp: Factory) -> None:
    zero = loss_term("z", lambda m, x, y, logits: logits.sum() * 0)
    with pytest.raises(ConfigError, match="unique"):
        train(make_mlp(0), digits, TrainConfig(epochs=1, **QUIET), loss_terms=[zero, zero])
    nan = loss_term("nan", lambda m, x, y, logits: torch.tensor(float("nan")))
    with pytest.raises(ConfigError, match="loss became nan at epoch 0 step 0"):
        train(make_mlp(0), digits, TrainConfig(epochs=1, **QUIET), loss_terms=[nan])
    with pytest.raises(DataError, match="DataBundle"):
        train(make_mlp(0), digits.train, TrainConfig(epochs=1, **QUIET))  # type: ignore[arg-type]


def test_same_seed_same_weights_and_caller_rng_untouched(
    digits: DataBundle, make_cnn: Factory
) -> None:
    cfg = TrainConfig(epochs=2, augment="shift2", batch_size=64, **QUIET)
    a, b, c = make_cnn(1), make_cnn(1), make_cnn(1)
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    train(a, digits, cfg)
    assert torch.equal(torch.get_rng_state(), rng_before)
    train(b, digits, cfg)
    train(c, digits, TrainConfig(**{**cfg.model_dump(), "seed": 1}))
    for pa, pb in zip(params_of(a), params_of(b), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(params_of(a), params_of(c), strict=True))


def test_random_shift_moves_each_image_by_at_most_two_pixels() -> None:
    x = torch.zeros(500, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0  # an impulse in the centre
    out = random_shift(x)
    assert out.shape == (500, 1, 9, 9)
    assert torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(500))
    pos = out.flatten(1).argmax(dim=1)
    rows, cols = pos // 9, pos % 9
    assert set(rows.tolist()) == {2, 3, 4, 5, 6} and set(cols.tolist()) == {2, 3, 4, 5, 6}
    with pytest.raises(ShapeError, match=r"shift2.*\(4, 64\)"):
        random_shift(torch.zeros(4, 64))


def test_progress_bar_only_when_enabled() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    bar = EpochProgress(TrainConfig(epochs=3), 2, console=console)
    with bar:
        bar.start_epoch(0)
        bar.advance(0.5, 0.75, {"kd": 0.25})
    assert bar.enabled
    assert "epoch 1/3" in buf.getvalue() and "kd 0.2500" in buf.getvalue()
    quiet = io.StringIO()
    off = EpochProgress(
        TrainConfig(show_progress=False), 2, console=Console(file=quiet, force_terminal=True)
    )
    with off:
        off.start_epoch(0)
        off.advance(0.5, 0.75, {})
    assert not off.enabled and quiet.getvalue() == ""
    not_tty = EpochProgress(
        TrainConfig(), 2, console=Console(file=io.StringIO(), force_terminal=False)
    )
    assert not not_tty.enabled


def test_top_level_train_stays_callable_after_submodule_imports(
    digits: DataBundle, make_mlp: Factory
) -> None:
    import torchshrink
    import torchshrink.train.config  # rebinds `torchshrink.train` to the package

    result = torchshrink.train(make_mlp(0), digits, torchshrink.TrainConfig(epochs=1, **QUIET))
    assert result.epochs_run == 1
    from torchshrink.train import train as package_train

    assert package_train is train
