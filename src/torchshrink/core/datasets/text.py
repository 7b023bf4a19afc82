"""``text:PATH``: one sentence per line, for calibrating and evaluating text models.

The file is read as UTF-8; surrounding whitespace is stripped and blank lines are skipped.
The lines are shuffled with ``seed`` and split as follows:

* ``n >= MIN_DISJOINT`` lines: the last ``max(1, round(n * test_fraction))`` shuffled lines are
  the test split and the rest the train split (disjoint);
* fewer lines (a tiny file): every line is in train (so calibration sees all of them) and the
  test split is the last ``max(1, round(n * test_fraction))`` of them, which overlap train;
  ``meta["overlap"]`` says so.

``limit`` then keeps the first N of each split. The bundle has ``task="text"``,
``num_classes=None``, ``input_shape=()`` and datasets of plain strings.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "s.txt")
    >>> _ = open(path, "w", encoding="utf-8").write("a cat\\n\\na dog\\n")
    >>> b = load_text_data(path)
    >>> sorted(b.train), len(b.test)
    (['a cat', 'a dog'], 1)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import DataError, EmptyDataError

MIN_DISJOINT = 10  # below this many lines, train keeps every line (see module docstring)


class TextLines(Dataset[str]):
    """A dataset of strings; ``ds[i]`` is one sentence.

    Example:
        >>> TextLines(["hello", "world"])[1]
        'world'
    """

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index: int) -> str:
        return self.lines[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self.lines)


def read_lines(path: Path, ref: str) -> list[str]:
    """Non-blank, stripped lines of a UTF-8 file, or a :class:`DataError` naming the file."""
    if not path.is_file():
        raise DataError(f"data '{ref}': file not found: '{path}'")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: drop a BOM written by some editors
    except UnicodeDecodeError as exc:
        raise DataError(f"data '{ref}': '{path}' is not UTF-8 text ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_text_data(
    path: str | Path,
    *,
    ref: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    test_fraction: float = 0.1,
) -> DataBundle:
    """Load a file of sentences into a text bundle (train / test datasets of strings).

    Args:
        path: the text file, one sentence per line.
        ref: name recorded in the bundle and used in errors (default ``"text:<path>"``).
        seed: fixes the shuffle and therefore the split.
        limit: keep only the first N lines of each split.
        test_fraction: share of lines in the test split.

    Example:
        >>> b = load_text_data("sentences.txt", limit=64)  # doctest: +SKIP
        >>> b.task, b.num_classes, b.input_shape  # doctest: +SKIP
        ('text', None, ())
    """
    path = Path(path).expanduser()
    ref = ref or f"text:{path}"
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"data '{ref}': test_fraction must be between 0 and 1, got {test_fraction}")
    if limit is not None and limit < 1:
        raise DataError(f"data '{ref}': limit must be a positive integer, got {limit}")
    lines = read_lines(path, ref)
    n = len(lines)
    if n == 0:
        raise EmptyDataError(f"data '{ref}': '{path}' holds no non-blank lines")
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [lines[i] for i in order]
    n_test = max(1, round(n * test_fraction))
    overlap = n < MIN_DISJOINT
    train = shuffled if overlap else shuffled[: n - n_test]
    test = shuffled[n - n_test :]
    return DataBundle(
        ref,
        TextLines(train[:limit]),
        TextLines(test[:limit]),
        num_classes=None,
        input_shape=(),
        task="text",
        meta={
            "path": str(path),
            "seed": seed,
            "limit": limit,
            "lines": n,
            "overlap": overlap,
            "train_size": len(train[:limit]),
            "test_size": len(test[:limit]),
        },
    )
