"""Re-estimate BatchNorm running statistics after the weights changed (pruning, quantization).

Running means and variances collected during training go stale once weights are pruned,
clustered or quantized; a few forward passes over training data fix them without any gradient.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    >>> data = [(torch.randn(32, 4), torch.zeros(32, dtype=torch.long)) for _ in range(3)]
    >>> recalibrate_bn(model, data, num_batches=3)
    96
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import EmptyDataError


def _batches(
    data: DataBundle | Dataset[Any] | Iterable[Any], batch_size: int, seed: int
) -> Iterable[Any]:
    if isinstance(data, DataBundle):
        data = data.train
    if isinstance(data, Dataset):
        gen = torch.Generator().manual_seed(seed)
        n = len(data)  # type: ignore[arg-type]
        # A short last batch would get the same weight as a full one in the cumulative average.
        return DataLoader(
            data, batch_size=batch_size, shuffle=True, generator=gen, drop_last=n > batch_size
        )
    return data


def _inputs(batch: Any) -> Any:
    # Batches are (x, y) pairs or bare inputs.
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    data: DataBundle | Dataset[Any] | Iterable[Any],
    *,
    num_batches: int = 50,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> int:
    """Reset every BatchNorm's running statistics and re-estimate them on ``data`` (in place).

    Only the BatchNorm layers run in train mode (the rest, e.g. dropout, stays in eval mode, as
    at inference) with ``momentum=None``, so the running statistics become the plain average of
    the per-batch statistics over the batches seen. The model's modes and each layer's momentum
    are restored afterwards. No gradient is computed and no weight changes.

    Args:
        model: the model; changed in place (only BatchNorm buffers).
        data: a :class:`DataBundle` (its train split is used), a dataset of ``(x, y)`` pairs
            (shuffled with ``seed``) or an iterable of batches (``(x, y)`` or ``x``).
        num_batches: at most this many batches are used.
        batch_size: batch size when ``data`` is a bundle or dataset.
        device: where to run the forward passes.
        seed: shuffling seed when ``data`` is a bundle or dataset.

    Returns:
        The number of samples seen (0 when the model has no BatchNorm layer).

    Raises:
        EmptyDataError: ``data`` yields no batch.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
        >>> recalibrate_bn(m, [torch.randn(8, 1, 5, 5)], num_batches=1)
        8
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {bn: bn.momentum for bn in bns}
    # Kept so that empty data leaves the old statistics rather than freshly reset ones.
    saved = {bn: {k: v.clone() for k, v in bn.state_dict().items()} for bn in bns}
    seen = 0
    try:
        model.eval()
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average over the batches seen
            bn.train()
        for i, batch in enumerate(_batches(data, batch_size, seed)):
            if i >= num_batches:
                break
            x = _inputs(batch)
            model(x.to(device) if isinstance(x, torch.Tensor) else x)
            seen += len(x)
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        for m, was_training in modes.items():
            m.train(was_training)
    if seen == 0:
        for bn, state in saved.items():
            bn.load_state_dict(state)
        raise EmptyDataError("recalibrate_bn: the calibration data yielded no batch")
    return seen
