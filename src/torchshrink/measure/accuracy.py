"""Accuracy and loss of a classifier over a dataset (never changes the model).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torch.utils.data import TensorDataset
    >>> ds = TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
    >>> r = evaluate(nn.Linear(4, 2), ds)
    >>> r.n
    8
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchshrink.core.errors import EmptyDataError


@dataclass(frozen=True)
class EvalResult:
    """Top-1 accuracy (0..1), mean cross-entropy loss and the number of samples seen."""

    accuracy: float
    loss: float
    n: int

    @property
    def error(self) -> float:
        return 1.0 - self.accuracy


def _batches(data: Dataset[Any] | Iterable[Any], batch_size: int) -> Iterable[Any]:
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=False)
    return data


def _logits(out: Any) -> torch.Tensor:
    # Models may return a tuple, a dict or a HF ModelOutput; the first tensor is the logits.
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = out.get("logits", next(iter(out.values())))
        return _logits(out)
    if isinstance(out, (tuple, list)):
        return _logits(out[0])
    raise TypeError(f"cannot find logits in a model output of type {type(out).__name__}")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset[Any] | Iterable[Any],
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> EvalResult:
    """Evaluate top-1 accuracy and cross-entropy loss of ``model`` on ``data``.

    The model is put in eval mode for the measurement and its previous mode is restored.

    Args:
        model: a classifier returning logits of shape ``(B, num_classes)``.
        data: a dataset of ``(x, y)`` pairs or an iterable of ``(x, y)`` batches.
        batch_size: batch size used when ``data`` is a dataset.
        device: where to run.

    Raises:
        EmptyDataError: ``data`` has no samples.
    """
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    try:
        for x, y in _batches(data, batch_size):
            x, y = x.to(device), y.to(device)
            logits = _logits(model(x))  # (B, num_classes)
            loss_sum += float(F.cross_entropy(logits.float(), y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    if total == 0:
        raise EmptyDataError("evaluation data has no samples")
    return EvalResult(accuracy=correct / total, loss=loss_sum / total, n=total)
