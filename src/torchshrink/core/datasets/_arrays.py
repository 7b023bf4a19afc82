"""Turn labelled numpy arrays into a normalised :class:`DataBundle` (shared by every image source).

Every array source (digits, mnist1d, npz, imagefolder) ends in :func:`bundle_from_arrays`, so the
rules are the same everywhere:

1. labels must be whole numbers >= 0, one per sample;
2. per-channel mean / std come from the *whole* train split (before ``limit``), so a model
   trained with ``limit`` sees the same normalisation as one trained without;
3. each split is shuffled with ``seed`` and ``limit`` keeps its first N samples;
4. ``x`` becomes float32 ``(x * scale - mean) / std``.

Example:
    >>> import numpy as np
    >>> x = np.arange(24, dtype=np.uint8).reshape(6, 1, 2, 2)
    >>> y = np.array([0, 1, 0, 1, 0, 1])
    >>> b = bundle_from_arrays("toy", (x, y), (x, y), scale=1 / 255, seed=0)
    >>> b.input_shape, b.num_classes, len(b.train)
    ((1, 2, 2), 2, 6)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import DataError, EmptyDataError

Split = tuple[np.ndarray, np.ndarray]  # (x channel-first (N, C, ...), y (N,))

_STATS_CHUNK = 8192  # samples per chunk: bounds the float64 temporary to ~50 MB for MNIST


def check_labels(y: np.ndarray, *, ref: str, split: str) -> np.ndarray:
    """Return ``y`` as int64 ``(N,)`` or raise :class:`DataError` naming ``ref`` and ``split``."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # (N, 1) column vectors are common in saved arrays
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"data '{ref}': {split} labels must be 1-D, got shape {tuple(y.shape)}")
    if y.dtype.kind in "iu":
        out = y.astype(np.int64)
    elif y.dtype.kind == "f" and y.size and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        out = y.astype(np.int64)  # whole-number floats are labels saved carelessly, accept them
    elif y.dtype.kind == "f" and not y.size:
        out = y.astype(np.int64)
    else:
        bad = y[:3].tolist() if y.dtype.kind != "O" else "objects"
        raise DataError(
            f"data '{ref}': {split} labels must be integers, got dtype {y.dtype} (e.g. {bad})"
        )
    if out.size and out.min() < 0:
        raise DataError(f"data '{ref}': {split} labels must be >= 0, got {int(out.min())}")
    return out


def channel_stats(x: np.ndarray, *, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean / std of ``x * scale`` over all axes but 1, in float64 chunks.

    A zero std (a constant channel) is reported as 1.0 so that normalising never divides by 0.
    """
    c = x.shape[1]
    total = np.zeros(c)
    total_sq = np.zeros(c)
    axes = tuple(a for a in range(x.ndim) if a != 1)
    for start in range(0, x.shape[0], _STATS_CHUNK):
        chunk = x[start : start + _STATS_CHUNK].astype(np.float64) * scale  # (n, C, ...)
        total += chunk.sum(axis=axes)
        total_sq += np.square(chunk).sum(axis=axes)
    count = x.size // c
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    std = np.sqrt(var)
    std[std < 1e-12] = 1.0
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def stratified_split(
    y: np.ndarray, *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` with about ``test_fraction`` of every class in test.

    Each class keeps at least one train sample; test gets at least one sample overall.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train_idx: list[np.ndarray] = []
    test_idx: list[np.ndarray] = []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = min(round(len(idx) * test_fraction), len(idx) - 1)
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train, test = np.concatenate(train_idx), np.concatenate(test_idx)
    if test.size == 0 and train.size > 1:  # tiny data: move one sample so test is non-empty
        test, train = train[:1], train[1:]
    return np.sort(train), np.sort(test)


def bundle_from_arrays(
    ref: str,
    train: Split,
    test: Split,
    *,
    scale: float = 1.0,
    seed: int = 0,
    limit: int | None = None,
    num_classes: int | None = None,
    meta: dict[str, Any] | None = None,
) -> DataBundle:
    """Validate, normalise, shuffle and limit two labelled splits into a :class:`DataBundle`.

    Args:
        ref: the data reference, used in error messages and as the bundle name.
        train: ``(x, y)`` with ``x`` channel-first ``(N, C, ...)`` (any real dtype) and ``y (N,)``.
        test: same form as ``train``.
        scale: factor applied to ``x`` before normalising (``1/255`` for uint8 images).
        seed: seeds the shuffle of each split.
        limit: keep only the first ``limit`` samples of each split after the shuffle.
        num_classes: number of classes; defaults to the largest label + 1.
        meta: extra facts recorded in the bundle.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).random((10, 3, 4, 4))
        >>> y = np.arange(10) % 2
        >>> bundle_from_arrays("toy", (x, y), (x, y), limit=4).example_inputs(4).shape
        torch.Size([4, 3, 4, 4])
    """
    splits: dict[str, Split] = {}
    for name, (x, y) in (("train", train), ("test", test)):
        y = check_labels(y, ref=ref, split=name)
        if x.shape[0] != y.shape[0]:
            raise DataError(f"data '{ref}': {name} has {x.shape[0]} inputs but {y.shape[0]} labels")
        if x.shape[0] == 0:
            raise EmptyDataError(f"data '{ref}': the {name} split has no samples")
        if x.dtype.kind not in "biuf":
            raise DataError(f"data '{ref}': {name} inputs must be numeric, got dtype {x.dtype}")
        splits[name] = (x, y)
    if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
        raise DataError(
            f"data '{ref}': train samples have shape {splits['train'][0].shape[1:]} but test "
            f"samples have shape {splits['test'][0].shape[1:]}"
        )
    if limit is not None and limit < 1:
        raise DataError(f"data '{ref}': limit must be a positive integer, got {limit}")

    mean, std = channel_stats(splits["train"][0], scale=scale)
    view = (1, -1) + (1,) * (splits["train"][0].ndim - 2)  # broadcast over (N, C, ...)
    mean_a = np.asarray(mean, dtype=np.float32).reshape(view)
    std_a = np.asarray(std, dtype=np.float32).reshape(view)
    rng = np.random.default_rng(seed)
    datasets: dict[str, TensorDataset] = {}
    sizes: dict[str, int] = {}
    for name, (x, y) in splits.items():
        order = rng.permutation(x.shape[0])[:limit]
        xs = (x[order].astype(np.float32) * np.float32(scale) - mean_a) / std_a  # (n, C, ...)
        datasets[name] = TensorDataset(torch.from_numpy(xs), torch.from_numpy(y[order]))
        sizes[name] = len(order)

    max_label = max(int(splits["train"][1].max()), int(splits["test"][1].max()))
    if num_classes is None:
        num_classes = max_label + 1
    elif max_label >= num_classes:
        raise DataError(
            f"data '{ref}': label {max_label} is out of range for {num_classes} classes"
        )
    info = {"seed": seed, "limit": limit, "train_size": sizes["train"], "test_size": sizes["test"]}
    return DataBundle(
        ref,
        datasets["train"],
        datasets["test"],
        num_classes=num_classes,
        input_shape=tuple(int(s) for s in splits["train"][0].shape[1:]),
        mean=mean,
        std=std,
        task="classification",
        meta={**info, **(meta or {})},
    )
