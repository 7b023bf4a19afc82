"""``mnist1d``: the MNIST-1D benchmark, generated locally by the ``mnist1d`` package.

MNIST-1D (Greydanus 2020) turns ten 1-D digit templates into 40-point signals with random
padding, translation, shear, scaling and noise. We call the package's generator
(``make_dataset``), never its download path, so nothing leaves the machine. The generator's own
seed (``generator_seed``, 42 in the published benchmark) fixes *which* samples exist and its
80/20 train/test split; our ``seed`` only shuffles each split before ``limit``.

Samples are ``(1, 40)`` float32; nothing is written to disk unless ``cache_dir`` is given.

Example:
    >>> b = load_mnist1d_data(num_samples=200)
    >>> b.input_shape, b.num_classes, len(b.train), len(b.test)
    ((1, 40), 10, 160, 40)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from torchshrink.core.databundle import DataBundle
from torchshrink.core.datasets._arrays import bundle_from_arrays
from torchshrink.core.errors import DataError, require


def _generate(num_samples: int, train_split: float, generator_seed: int) -> dict[str, Any]:
    data = require("mnist1d.data", "data")
    args = data.get_dataset_args()  # type: ignore[attr-defined]
    args.num_samples = num_samples
    args.train_split = train_split
    args.seed = generator_seed
    # make_dataset reseeds the global `random` and `np.random` states; restore them afterwards
    # so that loading data never changes a user's other random streams.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        return data.make_dataset(args)  # type: ignore[attr-defined,no-any-return]
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def load_mnist1d_data(
    *,
    ref: str = "mnist1d",
    seed: int = 0,
    limit: int | None = None,
    num_samples: int = 5000,
    train_split: float = 0.8,
    generator_seed: int = 42,
    cache_dir: str | Path | None = None,
) -> DataBundle:
    """Generate MNIST-1D and return it as ``(1, 40)`` signals with 10 classes.

    Args:
        ref: name recorded in the bundle and used in error messages.
        seed: shuffles each split before ``limit``.
        limit: keep only the first N samples of each split.
        num_samples: total samples generated (rounded down to a multiple of 10; 5000 published).
        train_split: share of the generated samples in the train split.
        generator_seed: the generator's seed (42 gives the published data set).
        cache_dir: if given, the generated arrays are saved there as ``.npz`` and reused.

    Example:
        >>> load_mnist1d_data(num_samples=100, limit=3).example_inputs(3).shape
        torch.Size([3, 1, 40])
    """
    if num_samples < 20:
        raise DataError(f"data '{ref}': num_samples must be at least 20, got {num_samples}")
    if not 0.0 < train_split < 1.0:
        raise DataError(f"data '{ref}': train_split must be between 0 and 1, got {train_split}")
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir).expanduser() / (
            f"mnist1d_n{num_samples}_split{train_split}_seed{generator_seed}.npz"
        )
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    else:
        raw = _generate(num_samples, train_split, generator_seed)
        arrays = {k: np.asarray(raw[k]) for k in ("x", "y", "x_test", "y_test")}
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, **arrays)
    return bundle_from_arrays(
        ref,
        (arrays["x"][:, None, :], arrays["y"]),  # (N, 1, 40)
        (arrays["x_test"][:, None, :], arrays["y_test"]),
        seed=seed,
        limit=limit,
        num_classes=10,
        meta={
            "source": "mnist1d.data.make_dataset",
            "num_samples": num_samples,
            "generator_seed": generator_seed,
            "cache": str(cache) if cache is not None else None,
        },
    )
