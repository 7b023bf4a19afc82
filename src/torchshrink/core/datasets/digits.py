"""``digits``: scikit-learn's bundled 8x8 handwritten digits, the embedded default data set.

1797 real images (about 180 per class) ship inside scikit-learn, so this needs no download and
runs anywhere. Pixels (0..16) are scaled to [0, 1], then normalised with the train-split mean/std.
The train/test split is stratified by class and fixed by ``seed`` (default 80/20).

Example:
    >>> b = load_digits_data(seed=0)
    >>> b.input_shape, b.num_classes, len(b.train) + len(b.test)
    ((1, 8, 8), 10, 1797)
"""

from __future__ import annotations

from torchshrink.core.databundle import DataBundle
from torchshrink.core.datasets._arrays import bundle_from_arrays, stratified_split
from torchshrink.core.errors import require


def load_digits_data(
    *,
    ref: str = "digits",
    seed: int = 0,
    limit: int | None = None,
    test_fraction: float = 0.2,
) -> DataBundle:
    """Load scikit-learn's digits as ``(1, 8, 8)`` float32 images with a seeded stratified split.

    Args:
        ref: name recorded in the bundle and used in error messages.
        seed: fixes the split and the order of each split.
        limit: keep only the first N samples of each split (after the seeded shuffle).
        test_fraction: share of every class that goes to the test split.

    Example:
        >>> load_digits_data(limit=5).example_inputs(5).shape
        torch.Size([5, 1, 8, 8])
    """
    datasets = require("sklearn.datasets", "data")
    raw = datasets.load_digits()  # type: ignore[attr-defined]
    images = raw.images[:, None, :, :]  # (1797, 1, 8, 8), float64 in 0..16
    labels = raw.target
    train_idx, test_idx = stratified_split(labels, test_fraction=test_fraction, seed=seed)
    return bundle_from_arrays(
        ref,
        (images[train_idx], labels[train_idx]),
        (images[test_idx], labels[test_idx]),
        scale=1.0 / 16.0,
        seed=seed,
        limit=limit,
        num_classes=10,
        meta={"source": "sklearn.datasets.load_digits", "test_fraction": test_fraction},
    )
