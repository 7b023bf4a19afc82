"""``imagefolder:DIR``: image files sorted into one folder per class.

Two layouts are accepted:

* ``DIR/train/<class>/*`` and ``DIR/test/<class>/*``: the split is taken as given;
* ``DIR/<class>/*``: split per class with ``seed`` (``test_fraction`` of each class to test).

Class names are sorted to give label indices and recorded in ``meta["classes"]``. Every image is
converted to one mode (``"L"`` or ``"RGB"``; by default whichever most images already have) and
resized to one size (``size`` as ``H`` or ``(H, W)``; by default the first image's size), then
scaled to [0, 1] and normalised per channel with the train mean / std. Pillow is imported only
when this source is used.

Example:
    >>> b = load_imagefolder_data("photos/")  # doctest: +SKIP
    >>> b.meta["classes"]  # doctest: +SKIP
    ['cat', 'dog']
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from torchshrink.core.databundle import DataBundle
from torchshrink.core.datasets._arrays import bundle_from_arrays, stratified_split
from torchshrink.core.errors import DataError, EmptyDataError, require

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P")  # P (palette) images are usually grey


def _class_files(root: Path) -> dict[str, list[Path]]:
    """``{class name: sorted image files}`` for every sub-folder of ``root``."""
    classes: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in EXTENSIONS and f.is_file())
        classes[sub.name] = files
    return classes


def _open(image_mod: Any, path: Path, ref: str) -> Any:
    try:
        return image_mod.open(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"data '{ref}': cannot read image '{path}' ({exc})") from None


def _to_array(
    image_mod: Any, files: list[Path], *, mode: str, size: tuple[int, int], ref: str
) -> np.ndarray:
    """Decode, convert and resize ``files`` into one uint8 ``(N, C, H, W)`` array."""
    channels = 1 if mode == "L" else 3
    out = np.empty((len(files), channels, size[0], size[1]), dtype=np.uint8)
    for i, path in enumerate(files):
        with _open(image_mod, path, ref) as img:
            try:
                img = img.convert(mode)
                if img.size != (size[1], size[0]):  # PIL sizes are (W, H)
                    img = img.resize((size[1], size[0]), image_mod.Resampling.BILINEAR)
                arr = np.asarray(img, dtype=np.uint8)  # (H, W) or (H, W, 3)
            except (OSError, ValueError) as exc:
                raise DataError(f"data '{ref}': cannot decode image '{path}' ({exc})") from None
        out[i] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
    return out


def _parse_size(size: int | tuple[int, int] | list[int] | None, ref: str) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or any(not isinstance(s, int) or s < 1 for s in hw):
        raise DataError(f"data '{ref}': size must be a positive int or (height, width), got {size}")
    return (int(hw[0]), int(hw[1]))


def load_imagefolder_data(
    path: str | Path,
    *,
    ref: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    size: int | tuple[int, int] | None = None,
    mode: str | None = None,
    test_fraction: float = 0.2,
) -> DataBundle:
    """Load a folder of class sub-folders of images into a bundle.

    Args:
        path: the root folder (``DIR/train`` + ``DIR/test``, or ``DIR/<class>``).
        ref: name recorded in the bundle and used in errors (default ``"imagefolder:<path>"``).
        seed: fixes the split of a single tree and the order of each split.
        limit: keep only the first N samples of each split.
        size: output ``H`` or ``(H, W)``; default the first image's size.
        mode: ``"L"`` (grey) or ``"RGB"``; default the majority mode of the images.
        test_fraction: share of each class put in test when there is no ``train``/``test`` split.

    Example:
        >>> b = load_imagefolder_data("photos/", size=32, mode="RGB")  # doctest: +SKIP
        >>> b.input_shape  # doctest: +SKIP
        (3, 32, 32)
    """
    root = Path(path).expanduser()
    ref = ref or f"imagefolder:{root}"
    if not root.is_dir():
        raise DataError(f"data '{ref}': directory not found: '{root}'")
    if mode is not None and mode.upper() not in ("L", "RGB"):
        raise DataError(f"data '{ref}': mode must be 'L' or 'RGB', got '{mode}'")
    out_size = _parse_size(size, ref)
    presplit = (root / "train").is_dir() and (root / "test").is_dir()
    train_classes = _class_files(root / "train" if presplit else root)
    test_classes = _class_files(root / "test") if presplit else {}
    classes = sorted(train_classes)
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
        raise DataError(f"data '{ref}': test classes {unknown} have no train folder")
    if not classes or not any(train_classes.values()):
        raise EmptyDataError(
            f"data '{ref}': no images ({', '.join(EXTENSIONS)}) found in class folders"
        )
    if presplit and not any(test_classes.values()):
        raise EmptyDataError(f"data '{ref}': the test folder holds no images")

    def flatten(tree: dict[str, list[Path]]) -> tuple[list[Path], np.ndarray]:
        files = [f for c in classes for f in tree.get(c, [])]
        labels = np.array([i for i, c in enumerate(classes) for _ in tree.get(c, [])], np.int64)
        return files, labels

    image_mod = require("PIL.Image", "data")
    train_files, train_y = flatten(train_classes)
    test_files, test_y = flatten(test_classes)
    all_files = train_files + test_files
    if out_size is None or mode is None:
        with _open(image_mod, all_files[0], ref) as first:
            first_size = (first.size[1], first.size[0])  # (H, W)
        votes: Counter[str] = Counter()
        if mode is None:
            for f in all_files:  # Image.open reads only the header, so this is cheap
                with _open(image_mod, f, ref) as img:
                    votes["L" if img.mode in _GREY_MODES else "RGB"] += 1
        out_size = out_size or first_size
        mode = mode or ("L" if votes["L"] > votes["RGB"] else "RGB")
    mode = mode.upper()

    x_all = _to_array(image_mod, all_files, mode=mode, size=out_size, ref=ref)  # (N, C, H, W)
    if presplit:
        x_train, x_test = x_all[: len(train_files)], x_all[len(train_files) :]
    else:
        tr, te = stratified_split(train_y, test_fraction=test_fraction, seed=seed)
        x_train, x_test, test_y, train_y = x_all[tr], x_all[te], train_y[te], train_y[tr]
    return bundle_from_arrays(
        ref,
        (x_train, train_y),
        (x_test, test_y),
        scale=1.0 / 255.0,
        seed=seed,
        limit=limit,
        num_classes=len(classes),
        meta={"path": str(root), "classes": classes, "presplit": presplit, "mode": mode},
    )
