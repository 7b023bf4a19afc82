"""``npz:PATH``: labelled arrays in a NumPy ``.npz`` archive with train and test splits.

The archive must hold ``x_train``, ``y_train``, ``x_test`` and ``y_test``. Inputs may be
1-D signals ``(N, L)``, images ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)``; a trailing
channel dim of 1 or 3 is taken as channels-last when the second dim is not 1 or 3 (pass
``layout="nchw"`` / ``"nhwc"`` to decide explicitly). uint8 inputs are scaled by 1/255; float
inputs are used as they are. Then each channel is normalised with the train mean / std.

The file is read with ``allow_pickle=False``: an archive holding Python objects would need
pickle to load, which can run arbitrary code, so it is refused.

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "toy.npz")
    >>> x = np.zeros((4, 5, 5), np.uint8); y = np.array([0, 1, 2, 1])
    >>> np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    >>> load_npz_data(path).input_shape
    (1, 5, 5)
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from torchshrink.core.databundle import DataBundle
from torchshrink.core.datasets._arrays import bundle_from_arrays
from torchshrink.core.errors import DataError

KEYS = ("x_train", "y_train", "x_test", "y_test")
LAYOUTS = ("nchw", "nhwc", "nhw", "nl")


def detect_layout(shape: tuple[int, ...]) -> str:
    """Guess the layout of an input array from its shape.

    Example:
        >>> detect_layout((10, 28, 28)), detect_layout((10, 32, 32, 3)), detect_layout((10, 3, 8, 8))
        ('nhw', 'nhwc', 'nchw')
    """
    if len(shape) == 2:
        return "nl"
    if len(shape) == 3:
        return "nhw"
    if len(shape) == 4:
        if shape[1] not in (1, 3) and shape[3] in (1, 3):
            return "nhwc"
        return "nchw"
    raise DataError(
        f"inputs must have 2 (N, L), 3 (N, H, W) or 4 (N, C, H, W / N, H, W, C) dims, "
        f"got shape {shape}"
    )


def to_channels_first(x: np.ndarray, layout: str) -> np.ndarray:
    """Return ``x`` as ``(N, C, ...)``: add a channel dim or move a trailing one forward."""
    if layout in ("nl", "nhw"):
        return x[:, None]  # (N, 1, L) or (N, 1, H, W)
    if layout == "nhwc":
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, C, H, W)
    return x


def _read(path: Path, ref: str) -> dict[str, np.ndarray]:
    with path.open("rb") as f:
        magic = f.read(6)
    # np.load falls back to unpickling anything that is neither zip nor .npy; decide first.
    if magic == b"\x93NUMPY":
        raise DataError(
            f"data '{ref}': '{path}' holds a single array, expected a .npz archive with keys "
            f"{', '.join(KEYS)}"
        )
    if not magic.startswith(b"PK"):
        raise DataError(
            f"data '{ref}': cannot read '{path}' as a .npz archive (not a zip of .npy arrays; "
            "pickle files are refused)"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"data '{ref}': cannot read '{path}' as a .npz archive ({exc})") from None
    with archive:
        found = sorted(archive.files)
        missing = [k for k in KEYS if k not in found]
        if missing:
            raise DataError(
                f"data '{ref}': '{path}' has no key '{missing[0]}' (keys found: "
                f"{', '.join(found) or 'none'}; expected {', '.join(KEYS)})"
            )
        arrays: dict[str, np.ndarray] = {}
        for key in KEYS:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                if "allow_pickle" in str(exc):
                    raise DataError(
                        f"data '{ref}': array '{key}' in '{path}' holds Python objects; loading "
                        "it would need pickle, which is refused (it can run arbitrary code). "
                        "Save plain numeric arrays instead."
                    ) from None
                raise DataError(
                    f"data '{ref}': cannot read '{key}' from '{path}' ({exc})"
                ) from None
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise DataError(
                    f"data '{ref}': cannot read '{key}' from '{path}' ({exc})"
                ) from None
    return arrays


def load_npz_data(
    path: str | Path,
    *,
    ref: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    layout: str | None = None,
) -> DataBundle:
    """Load an ``.npz`` archive with ``x_train, y_train, x_test, y_test`` into a bundle.

    Args:
        path: the ``.npz`` file.
        ref: name recorded in the bundle and used in errors (default ``"npz:<path>"``).
        seed: shuffles each split before ``limit``.
        limit: keep only the first N samples of each split.
        layout: ``"nchw"``, ``"nhwc"``, ``"nhw"`` or ``"nl"``; detected from the shape if None.

    Example:
        >>> b = load_npz_data("mnist.npz", limit=8)  # doctest: +SKIP
        >>> b.input_shape, b.num_classes  # doctest: +SKIP
        ((1, 28, 28), 10)
    """
    path = Path(path).expanduser()
    ref = ref or f"npz:{path}"
    if not path.is_file():
        raise DataError(f"data '{ref}': file not found: '{path}'")
    arrays = _read(path, ref)
    if layout is not None and layout.lower() not in LAYOUTS:
        raise DataError(f"data '{ref}': layout must be one of {', '.join(LAYOUTS)}, got '{layout}'")
    splits = []
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        if x.dtype.kind not in "biuf":
            raise DataError(f"data '{ref}': x_{split} must be numeric, got dtype {x.dtype}")
        try:
            lay = layout.lower() if layout else detect_layout(tuple(x.shape))
        except DataError as exc:
            raise DataError(f"data '{ref}': x_{split}: {exc}") from None
        expected_ndim = {"nl": 2, "nhw": 3, "nchw": 4, "nhwc": 4}[lay]
        if x.ndim != expected_ndim:
            raise DataError(
                f"data '{ref}': x_{split} has shape {tuple(x.shape)}, which is not layout '{lay}'"
            )
        splits.append((to_channels_first(x, lay), arrays[f"y_{split}"], lay))
    (x_tr, y_tr, lay_tr), (x_te, y_te, _) = splits
    if (x_tr.dtype == np.uint8) != (x_te.dtype == np.uint8):
        raise DataError(
            f"data '{ref}': x_train is {x_tr.dtype} but x_test is {x_te.dtype}; both must be "
            "uint8 (scaled by 1/255) or both not"
        )
    scale = 1.0 / 255.0 if x_tr.dtype == np.uint8 else 1.0
    return bundle_from_arrays(
        ref,
        (x_tr, y_tr),
        (x_te, y_te),
        scale=scale,
        seed=seed,
        limit=limit,
        meta={"path": str(path), "layout": lay_tr, "dtype": str(x_tr.dtype), "scale": scale},
    )
