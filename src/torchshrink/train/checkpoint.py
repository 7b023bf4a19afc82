"""Per-epoch training checkpoints: everything needed to resume and reach the same weights.

A checkpoint holds the model and optimizer state dicts, the scheduler state, the number of
finished epochs, the best test accuracy so far, the history and the RNG states. It is written
with ``torch.save`` to a temporary file that then replaces ``last.ckpt`` atomically, and read
back only with ``torch.load(..., weights_only=True)``, which never runs pickled code. Under
``torchrun`` only rank 0 writes it.

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> model = nn.Linear(2, 2)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> d = tempfile.mkdtemp()
    >>> path = save_checkpoint(d, TrainingSnapshot(model.state_dict(), opt.state_dict(), {},
    ...                        epochs_done=1, best_accuracy=0.5, best_epoch=0, history=[]))
    >>> load_checkpoint(d).epochs_done
    1
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from torchshrink.core.errors import ModelFileError
from torchshrink.train.distributed import is_main

CHECKPOINT_NAME = "last.ckpt"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainingSnapshot:
    """The resumable state of a training run after ``epochs_done`` finished epochs.

    Attributes:
        model: model ``state_dict``.
        optimizer: optimizer ``state_dict``.
        scheduler: scheduler ``state_dict``.
        epochs_done: epochs finished; training resumes at this (0-based) epoch.
        best_accuracy: best test accuracy so far (``-1.0`` before any evaluation).
        best_epoch: epoch of ``best_accuracy`` (``-1`` before any evaluation).
        history: per-epoch records as plain dicts.
        rng: RNG states (``"torch"`` and, on CUDA, ``"cuda"``) to continue random streams.
        global_step: optimizer steps done.
        early_stopped: the run ended by early stopping; resuming it trains no further.
    """

    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    epochs_done: int
    best_accuracy: float
    best_epoch: int
    history: list[dict[str, Any]]
    rng: dict[str, Any] = field(default_factory=dict)
    global_step: int = 0
    early_stopped: bool = False


def checkpoint_path(directory: str | os.PathLike[str]) -> Path:
    """The file a run's checkpoint lives in inside ``directory``.

    Example:
        >>> checkpoint_path("/tmp/run").name
        'last.ckpt'
    """
    return Path(directory) / CHECKPOINT_NAME


def capture_rng(device: str | torch.device = "cpu") -> dict[str, Any]:
    """The RNG states a training step consumes (dropout, augmentation).

    Example:
        >>> sorted(capture_rng())
        ['torch']
    """
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any]) -> None:
    """Set the RNG states captured by :func:`capture_rng`.

    Example:
        >>> state = capture_rng(); a = torch.rand(1); restore_rng(state)
        >>> bool(torch.rand(1) == a)
        True
    """
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng:
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_checkpoint(directory: str | os.PathLike[str], snapshot: TrainingSnapshot) -> Path:
    """Write ``snapshot`` to ``directory/last.ckpt`` atomically and return that path.

    Under ``torchrun`` only rank 0 writes; the other ranks return the path without writing.

    Example:
        >>> import tempfile
        >>> snap = TrainingSnapshot({}, {}, {}, epochs_done=0, best_accuracy=-1.0,
        ...                         best_epoch=-1, history=[])
        >>> save_checkpoint(tempfile.mkdtemp(), snap).name
        'last.ckpt'
    """
    path = checkpoint_path(directory)
    if not is_main():  # every rank holds the same state; concurrent writes would race
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "model": snapshot.model,
        "optimizer": snapshot.optimizer,
        "scheduler": snapshot.scheduler,
        "epochs_done": snapshot.epochs_done,
        "best_accuracy": snapshot.best_accuracy,
        "best_epoch": snapshot.best_epoch,
        "history": snapshot.history,
        "rng": snapshot.rng,
        "global_step": snapshot.global_step,
        "early_stopped": snapshot.early_stopped,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    # An interruption while writing must never leave a truncated `last.ckpt` behind.
    os.replace(tmp, path)
    return path


def load_checkpoint(directory: str | os.PathLike[str]) -> TrainingSnapshot | None:
    """Read the checkpoint in ``directory``; ``None`` if there is none yet.

    Raises:
        ModelFileError: the file is corrupt, not a torchshrink checkpoint, or would need pickled
            code to load (refused by ``weights_only=True``).

    Example:
        >>> import tempfile
        >>> load_checkpoint(tempfile.mkdtemp()) is None
        True
    """
    path = checkpoint_path(directory)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(
            f"checkpoint '{path}' cannot be read safely (corrupt, or not a checkpoint): {exc}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"checkpoint '{path}' is not a torchshrink training checkpoint "
            f"(format_version {FORMAT_VERSION} expected)"
        )
    return TrainingSnapshot(
        model=payload["model"],
        optimizer=payload["optimizer"],
        scheduler=payload["scheduler"],
        epochs_done=int(payload["epochs_done"]),
        best_accuracy=float(payload["best_accuracy"]),
        best_epoch=int(payload["best_epoch"]),
        history=list(payload["history"]),
        rng=dict(payload.get("rng", {})),
        global_step=int(payload.get("global_step", 0)),
        early_stopped=bool(payload.get("early_stopped", False)),
    )
