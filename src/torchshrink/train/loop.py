"""The one training loop of torchshrink: fine-tuning, QAT and distillation all run through it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torch.utils.data import TensorDataset
    >>> from torchshrink.core.databundle import DataBundle
    >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    >>> data = DataBundle("toy", TensorDataset(x, y), TensorDataset(x, y), 2, (4,))
    >>> result = train(nn.Linear(4, 2), data, TrainConfig(epochs=2, show_progress=False))
    >>> result.epochs_run, len(result.history)
    (2, 2)
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError, DataError, ModelFileError
from torchshrink.measure.accuracy import _logits, evaluate
from torchshrink.train.augment import augment_batch
from torchshrink.train.checkpoint import (
    TrainingSnapshot,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from torchshrink.train.config import TrainConfig
from torchshrink.train.distributed import (
    all_reduce_sum,
    any_rank,
    barrier,
    init_distributed,
    is_main,
    resolve_device,
    shard_loader,
    sync_from_main,
    unwrap_ddp,
    world_size,
    wrap_ddp,
)
from torchshrink.train.hooks import LossTerm, TrainHook, TrainState
from torchshrink.train.input_check import check_training_data
from torchshrink.train.progress import EpochProgress
from torchshrink.train.schedules import build_optimizer, build_scheduler


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch did.

    Attributes:
        epoch: 0-based epoch index.
        train_loss: mean total loss (cross-entropy plus loss terms) over the epoch's samples.
        train_accuracy: top-1 accuracy on the (augmented) training batches, in train mode.
        test_accuracy: test-split accuracy after the epoch, ``None`` if not evaluated.
        lr: learning rate of the epoch's last optimizer step.
        seconds: wall time of the epoch including evaluation.
        loss_terms: mean value of each named loss term.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float | None
    lr: float
    seconds: float
    loss_terms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainResult:
    """The outcome of :func:`train`.

    Attributes:
        model: the trained model (the same object that was passed in).
        final_accuracy: test accuracy of the returned model, measured after training.
        best_accuracy: best test accuracy seen at any evaluation (the final one included).
        best_epoch: epoch of ``best_accuracy``; ``-1`` if it is the untrained model's.
        epochs_run: epochs finished in total (those before a resume included).
        history: one :class:`EpochRecord` per finished epoch.
        stopped_early: training ended before ``config.epochs`` (early stopping or a hook).
        seconds: wall time of this call.
    """

    model: nn.Module
    final_accuracy: float
    best_accuracy: float
    best_epoch: int
    epochs_run: int
    history: tuple[EpochRecord, ...]
    stopped_early: bool
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Everything but the model, as JSON-ready values.

        Example:
            >>> r = TrainResult(nn.Identity(), 0.9, 0.9, 0, 1, (), False, 1.0)
            >>> r.to_dict()["final_accuracy"]
            0.9
        """
        out = {k: v for k, v in asdict(self).items() if k not in ("model", "history")}
        out["history"] = [asdict(r) for r in self.history]
        return out


def train(
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig | None = None,
    *,
    hooks: Sequence[TrainHook] = (),
    loss_terms: Sequence[LossTerm] = (),
    device: str | torch.device = "cpu",
) -> TrainResult:
    """Train ``model`` **in place** on ``data.train`` and return it inside a :class:`TrainResult`.

    Loss is ``config.ce_weight`` times cross-entropy (with ``config.label_smoothing``) plus
    every ``loss_terms`` value. The learning rate follows ``config.schedule`` per optimizer
    step; the test split is evaluated every ``config.eval_every`` epochs and once more at the
    end. With the same ``config.seed``
    and the same initial weights, the final weights are identical; the caller's global RNG is
    left as it was. With ``checkpoint_dir`` the state is saved after every epoch and
    ``resume=True`` continues from it to the same weights an uninterrupted run reaches.

    Under ``torchrun`` the same call trains data-parallel (see ``docs/distributed.md``): the
    model is wrapped in ``DistributedDataParallel`` (hooks and loss terms still get the
    unwrapped model), ``config.batch_size`` is the global batch split over the ranks, the
    history holds means over all ranks, every rank evaluates the whole test split, and only
    rank 0 writes checkpoints and draws the progress bar.

    Args:
        model: a classifier returning logits ``(B, num_classes)`` (or a tuple / dict / HF output
            whose first tensor is the logits); trained in place and moved to ``device``.
        data: a classification :class:`DataBundle`.
        config: training settings; ``TrainConfig()`` when ``None``.
        hooks: called at train start / end, around each optimizer step and at each epoch end.
        loss_terms: extra losses ``term(model, x, y, logits)``, each with a ``name``.
        device: where to train.

    Raises:
        DataError: ``data`` is not a classification bundle.
        ShapeError: the model does not take ``data``'s inputs (one batch is tried before
            training; the message names the layer, the input shape and what the layer expected)
            or gives fewer logits than ``data.num_classes``.
        ConfigError: a loss term has no name or a duplicate one, or the loss became NaN/inf.
        ModelFileError: the checkpoint to resume from does not fit ``model``.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> from torchshrink.train.hooks import loss_term
        >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> data = DataBundle("toy", TensorDataset(x, y), TensorDataset(x, y), 2, (4,))
        >>> l2 = loss_term("l2", lambda m, x, y, logits: 1e-3 * m.weight.pow(2).sum())
        >>> cfg = TrainConfig(epochs=1, show_progress=False)
        >>> train(nn.Linear(4, 2), data, cfg, loss_terms=[l2]).history[0].loss_terms["l2"] > 0
        True
    """
    config = config or TrainConfig()
    _check_inputs(data, loss_terms)
    if config.dropout is not None:
        _set_dropout(model, config.dropout)
    dev = resolve_device(device)
    model.to(dev)
    threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    rng_devices = [dev.index or 0] if dev.type == "cuda" else []
    try:
        # Seeding inside a forked RNG keeps training reproducible without disturbing the caller.
        with torch.random.fork_rng(devices=rng_devices):
            # Before seeding: even a model that draws random numbers in eval mode leaves the
            # training run (seeded next) and the caller's RNG (forked) as they were.
            check_training_data(model, data, device=dev)
            torch.manual_seed(config.seed)
            return _run(model, data, config, list(hooks), list(loss_terms), dev)
    finally:
        torch.set_num_threads(threads)


def _run(
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig,
    hooks: list[TrainHook],
    loss_terms: list[LossTerm],
    device: torch.device,
) -> TrainResult:
    t_start = time.perf_counter()
    ddp_on = init_distributed(device)
    steps_per_epoch = len(_train_loader(data, config, 0, ddp_on))
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=steps_per_epoch)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = TrainState(model=model, optimizer=optimizer, scheduler=scheduler, config=config)
    best_acc, best_epoch, start, early_done = -1.0, -1, 0, False
    if config.resume and config.checkpoint_dir is not None:
        # Rank 0 reads and sends, so other machines need no copy of the checkpoint.
        snap = load_checkpoint(config.checkpoint_dir) if is_main() else None
        if ddp_on:
            snap = sync_from_main(snap)
        if snap is not None:
            _restore(snap, model, optimizer, scheduler, config)
            best_acc, best_epoch, start = snap.best_accuracy, snap.best_epoch, snap.epochs_done
            state.history = [EpochRecord(**h) for h in snap.history]
            state.global_step = snap.global_step
            # An early-stopped run stays stopped; a run a hook interrupted goes on.
            early_done = snap.early_stopped
    # Wrapping broadcasts rank 0's parameters and buffers, so hooks start from the same model.
    forward = (
        wrap_ddp(model, device, find_unused=_has_unused(model, data, device)) if ddp_on else model
    )
    for h in hooks:
        h.on_train_start(state)
    end_epoch = start if early_done else config.epochs
    early = False
    with EpochProgress(config, steps_per_epoch) as bar:
        for epoch in range(start, end_epoch):
            t0 = time.perf_counter()
            state.epoch = epoch
            record = _train_epoch(state, data, loss_terms, hooks, params, bar, device, forward)
            test_acc = None
            if (epoch + 1) % config.eval_every == 0 or epoch == config.epochs - 1:
                test_acc = evaluate(model, data.test, batch_size=256, device=device).accuracy
                if test_acc > best_acc:
                    best_acc, best_epoch = test_acc, epoch
                elif (
                    config.early_stop_patience and epoch - best_epoch >= config.early_stop_patience
                ):
                    early = True
            record = replace(record, test_accuracy=test_acc, seconds=time.perf_counter() - t0)
            state.history.append(record)
            bar.end_epoch(record)
            for h in hooks:
                h.on_epoch_end(state)
            if ddp_on:  # a hook's stop request on any rank stops all of them together
                state.should_stop = any_rank(state.should_stop)
            if config.checkpoint_dir is not None:
                snap = TrainingSnapshot(
                    model=model.state_dict(),
                    optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict(),
                    epochs_done=epoch + 1,
                    best_accuracy=best_acc,
                    best_epoch=best_epoch,
                    history=[asdict(r) for r in state.history],
                    rng=capture_rng(device),
                    global_step=state.global_step,
                    early_stopped=early,
                )
                save_checkpoint(config.checkpoint_dir, snap)  # rank 0 only
                if ddp_on:
                    barrier()
            if early or state.should_stop:
                break
    unwrap_ddp(forward)
    final = evaluate(model, data.test, batch_size=256, device=device).accuracy
    if final > best_acc:
        best_acc, best_epoch = final, (state.history[-1].epoch if state.history else -1)
    for h in hooks:
        h.on_train_end(state)
    return TrainResult(
        model=model,
        final_accuracy=final,
        best_accuracy=best_acc,
        best_epoch=best_epoch,
        epochs_run=len(state.history),
        history=tuple(state.history),
        stopped_early=early or early_done or len(state.history) < config.epochs,
        seconds=time.perf_counter() - t_start,
    )


def _train_epoch(
    state: TrainState,
    data: DataBundle,
    loss_terms: list[LossTerm],
    hooks: list[TrainHook],
    params: list[nn.Parameter],
    bar: EpochProgress,
    device: torch.device,
    forward: nn.Module,
) -> EpochRecord:
    config, model, optimizer = state.config, state.model, state.optimizer
    forward.train()
    ddp_on = forward is not model
    loader = _train_loader(data, config, state.epoch, ddp_on)
    loss_sum, correct, seen, lr = 0.0, 0, 0, 0.0
    term_sums: dict[str, float] = {t.name: 0.0 for t in loss_terms}
    bar.start_epoch(state.epoch)
    for step, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        if config.augment is not None:
            x = augment_batch(x, config.augment)
        logits = _logits(forward(x))  # (B, num_classes)
        loss = config.ce_weight * F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
        terms = {t.name: t(model, x, y, logits) for t in loss_terms}
        for value in terms.values():
            loss = loss + value
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.step = step
        state.loss = float(loss.detach())
        state.loss_terms = {k: float(v.detach()) for k, v in terms.items()}
        if not math.isfinite(state.loss):
            raise ConfigError(
                f"train: the loss became {state.loss} at epoch {state.epoch} step {step}; "
                f"lower lr (got {config.lr}) or set grad_clip"
            )
        if config.grad_clip is not None:
            state.grad_norm = float(nn.utils.clip_grad_norm_(params, config.grad_clip))
        for h in hooks:
            h.before_step(state)
        optimizer.step()
        for h in hooks:
            h.after_step(state)
        lr = float(optimizer.param_groups[0]["lr"])
        state.scheduler.step()
        state.global_step += 1
        n = int(y.numel())
        seen += n
        loss_sum += state.loss * n
        correct += int((logits.detach().argmax(dim=1) == y).sum())
        for k, v in state.loss_terms.items():
            term_sums[k] += v * n
        bar.advance(state.loss, correct / seen, state.loss_terms)
    if ddp_on:  # sums over all ranks, so the history holds the mean over every sample
        sums = torch.tensor([loss_sum, correct, seen, *term_sums.values()], dtype=torch.float64)
        loss_sum, correct, seen, *terms_all = all_reduce_sum(sums).tolist()
        term_sums = dict(zip(term_sums, terms_all, strict=True))
    seen = max(seen, 1)
    return EpochRecord(
        epoch=state.epoch,
        train_loss=loss_sum / seen,
        train_accuracy=correct / seen,
        test_accuracy=None,
        lr=lr,
        seconds=0.0,
        loss_terms={k: v / seen for k, v in term_sums.items()},
    )


def _train_loader(data: DataBundle, config: TrainConfig, epoch: int, ddp_on: bool) -> Any:
    # A fresh loader seeded per epoch makes the shuffle order independent of how we got here
    # (straight through or resumed). Shards draw the same permutation, so the ranks' batches
    # together are the single-process batches.
    if not ddp_on:
        return data.loader("train", batch_size=config.batch_size, seed=config.seed + epoch)
    if config.batch_size % world_size():
        warnings.warn(
            f"train: batch_size {config.batch_size} is not a multiple of the {world_size()} "
            "ranks; each rank takes the next larger share, so the global batch grows",
            stacklevel=4,
        )
    return shard_loader(data.train, batch_size=config.batch_size, seed=config.seed, epoch=epoch)


def _has_unused(model: nn.Module, data: DataBundle, device: torch.device) -> bool:
    # DDP must be told about parameters that get no gradient (or it fails a step later), but
    # looking for them costs a graph walk per step: probe once, in eval mode (no BN update).
    params = [p for p in model.parameters() if p.requires_grad]
    x = data.example_inputs(2, split="train").to(device)  # (2, *input_shape)
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            out = _logits(model(x)).float().sum()
        grads = torch.autograd.grad(out, params, allow_unused=True) if out.requires_grad else []
    finally:
        model.train(was)
    return len(grads) < len(params) or any(g is None for g in grads)


def _check_inputs(data: Any, loss_terms: Sequence[Any]) -> None:
    if not isinstance(data, DataBundle):
        raise DataError(f"train: data must be a DataBundle, got {type(data).__name__}")
    if data.task != "classification":
        raise DataError(
            f"train: data '{data.name}' is {data.task} data; train needs classification"
        )
    names = [getattr(t, "name", None) for t in loss_terms]
    for t, name in zip(loss_terms, names, strict=True):
        if not isinstance(name, str) or not name or not callable(t):
            raise ConfigError(f"train: loss term {t!r} must be callable and have a non-empty name")
    if len(set(names)) != len(names):
        raise ConfigError(f"train: loss term names must be unique, got {names}")


def _set_dropout(model: nn.Module, p: float) -> None:
    layers = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]
    if not layers:
        warnings.warn(
            f"train: config.dropout={p} but {type(model).__name__} has no dropout layer",
            stacklevel=3,
        )
    for m in layers:
        m.p = p


def _restore(
    snap: TrainingSnapshot,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
) -> None:
    try:
        model.load_state_dict(snap.model)
        optimizer.load_state_dict(snap.optimizer)
        scheduler.load_state_dict(snap.scheduler)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ModelFileError(
            f"checkpoint in '{config.checkpoint_dir}' does not fit this model / config: {exc}"
        ) from None
    restore_rng(snap.rng)
