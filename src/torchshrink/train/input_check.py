"""Run a model once on a real batch before training, so a misfit fails early and by name.

Without this, a model that cannot take the data (3 input channels for 1-channel digits, a
classifier head with fewer outputs than the data has classes) fails inside the first training
step with a bare torch ``RuntimeError``, or, for too few outputs, only when a batch first holds
a label the head cannot score. :func:`probe_forward` runs the model once the way
:func:`~torchshrink.core.forward.checked_forward` does (so the error names the layer) and leaves
no trace: eval mode (dropout draws nothing, BatchNorm statistics stay), no autograd graph, every
module's train / eval flag and every buffer restored (an observer that records min / max on each
call keeps what it had). :func:`check_training_data` is what ``train()`` calls.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> probe_forward(m, torch.zeros(3, 2, 2)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ShapeError
from torchshrink.core.forward import Inputs, checked_forward, describe_shapes, eval_mode
from torchshrink.measure.accuracy import _logits


def probe_forward(model: nn.Module, inputs: Inputs) -> Any:
    """Run ``model`` on ``inputs`` once without changing it; a misfit names the failing layer.

    The model runs in eval mode under ``torch.no_grad()``; afterwards every module's
    train / eval flag and every buffer hold what they held before.

    Args:
        model: any ``nn.Module``.
        inputs: a tensor, a tuple of positional tensors or a dict of keyword tensors.

    Returns:
        Whatever the model returns (computed without gradients).

    Raises:
        ShapeError: the inputs do not fit; names the layer, its input shape and the reason.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
        >>> try:
        ...     probe_forward(m, torch.zeros(2, 1, 8, 8))
        ... except ShapeError as exc:
        ...     print(str(exc)[:49])
        input does not fit the model: module '0' (Conv2d)
    """
    # Each buffer object goes back into its slot with its old values, whether the forward
    # changed it in place or replaced it, so references held elsewhere stay valid. Parameters
    # need nothing: no_grad and no optimizer step leave them as they are.
    saved = [
        (mod, key, buf, buf.detach().clone())
        for mod in model.modules()
        for key, buf in mod._buffers.items()
        if buf is not None
    ]
    try:
        with eval_mode(model), torch.no_grad():
            return checked_forward(model, inputs)
    finally:
        with torch.no_grad():
            for mod, key, buf, old in saved:
                buf.copy_(old)
                mod._buffers[key] = buf


def check_training_data(
    model: nn.Module,
    data: DataBundle,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 2,
) -> None:
    """Check that ``model`` takes ``data``'s training inputs and scores all of its classes.

    Runs :func:`probe_forward` on the first ``batch_size`` training samples (no shuffling, no
    augmentation, no random number drawn), so training afterwards is exactly what it would have
    been without the check. Under DDP every rank checks its own copy; no collective is needed.

    Args:
        model: the classifier to be trained, already on ``device``.
        data: a classification :class:`DataBundle`.
        device: where the model lives.
        batch_size: samples in the check batch.

    Raises:
        ShapeError: the inputs do not fit (names the layer, the model input shape and what the
            layer expected), or the logits are not ``(B, K)`` with ``K >= data.num_classes``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.zeros(4, 6), torch.zeros(4, dtype=torch.long))
        >>> data = DataBundle("toy", ds, ds, num_classes=3, input_shape=(6,))
        >>> check_training_data(nn.Linear(6, 3), data)  # fits: returns None
        >>> try:
        ...     check_training_data(nn.Linear(6, 2), data)
        ... except ShapeError as exc:
        ...     print(str(exc)[:58])
        train: the model gives logits of shape (2, 2) for data 'to
    """
    x = data.example_inputs(batch_size, split="train").to(device)  # (b, *input_shape)
    try:
        out = probe_forward(model, x)
    except ShapeError as exc:
        raise ShapeError(f"train: data '{data.name}' does not fit the model: {exc}") from exc
    logits = _logits(out)  # (b, K)
    k = data.num_classes
    bad_rank = logits.dim() != 2 or logits.shape[0] != x.shape[0]
    if bad_rank or (k is not None and logits.shape[1] < k):
        raise ShapeError(
            f"train: the model gives logits of shape {tuple(logits.shape)} for data "
            f"'{data.name}' inputs of shape {describe_shapes(x)}; cross-entropy needs "
            f"({x.shape[0]}, K) with K >= {k} (the data's num_classes)"
        )
