"""Relative indices of the non-zeros of a flattened tensor, with Deep Compression's filler trick.

Each stored entry records its *gap*: the number of zeros skipped since the previous entry
(``0 .. 2**b - 1`` for ``b`` index bits). A gap of ``g > 2**b - 1`` zeros is bridged by
``g // 2**b`` **filler** entries: each has the largest gap ``2**b - 1`` and sits on the next zero,
whose value it stores as zero (the zero codeword, Han et al. 2016, Fig. 2). The real entry then
has gap ``g % 2**b``. Entry positions are recovered as ``cumsum(gap + 1) - 1``; writing every
entry's value (fillers write zero) rebuilds the tensor.

With Huffman-coded gaps, ``b`` trades filler entries (small ``b``) against a larger gap alphabet
(large ``b``); :func:`choose_index_bits` picks the ``b`` with the smallest coded size.

Example:
    >>> import numpy as np
    >>> gaps, filler = relative_indices(np.array([1, 12]), index_bits=2)
    >>> gaps.tolist(), filler.tolist()
    ([1, 3, 3, 2], [False, True, True, False])
    >>> absolute_positions(gaps).tolist()
    [1, 5, 9, 12]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from torchshrink.core.errors import ConfigError, ModelFileError

MAX_INDEX_BITS = 16
SEARCH_BITS = range(1, 13)  # candidates tried by choose_index_bits


def _check_bits(index_bits: int) -> int:
    if not 1 <= index_bits <= MAX_INDEX_BITS:
        raise ConfigError(f"index_bits must be in 1..{MAX_INDEX_BITS}, got {index_bits}")
    return index_bits


def zero_gaps(positions: np.ndarray) -> np.ndarray:
    """Zeros skipped before each of the sorted, distinct ``positions`` (int64).

    Example:
        >>> zero_gaps(np.array([0, 3, 4])).tolist()
        [0, 2, 0]
    """
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    return np.diff(pos, prepend=-1) - 1


def relative_indices(positions: np.ndarray, *, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode sorted non-zero positions as gaps below ``2**index_bits``, inserting fillers.

    Args:
        positions: sorted, distinct flat indices of the non-zeros.
        index_bits: bits per relative index ``b``; gaps range over ``0 .. 2**b - 1``.

    Returns:
        ``(gaps, filler)``: int64 gap per entry and a bool mask of the filler entries.

    Raises:
        ConfigError: ``index_bits`` outside 1..16, or positions not sorted and distinct.
    """
    span = 1 << _check_bits(index_bits)
    raw = zero_gaps(positions)  # (nnz,)
    if (raw < 0).any():
        raise ConfigError("relative_indices: positions must be sorted, distinct and >= 0")
    nfill = raw // span  # fillers before each real entry
    slot = np.arange(raw.size) + np.cumsum(nfill)  # (nnz,) entry index of each real entry
    total = raw.size + int(nfill.sum())
    gaps = np.full(total, span - 1, dtype=np.int64)
    gaps[slot] = raw % span
    filler = np.ones(total, dtype=bool)
    filler[slot] = False
    return gaps, filler


def absolute_positions(gaps: np.ndarray, *, numel: int | None = None) -> np.ndarray:
    """Flat positions (int64) of the entries from their gaps (fillers included).

    Raises:
        ModelFileError: a negative gap, or (with ``numel``) a position past the tensor's end.

    Example:
        >>> absolute_positions(np.array([2, 0])).tolist()
        [2, 3]
    """
    g = np.asarray(gaps, dtype=np.int64).reshape(-1)
    if g.size and g.min() < 0:
        raise ModelFileError("relative indices: negative gap")
    pos = np.cumsum(g + 1) - 1
    if numel is not None and pos.size and int(pos[-1]) >= numel:
        raise ModelFileError(
            f"relative indices point past the tensor's end (position {int(pos[-1])}, "
            f"{numel} elements)"
        )
    return pos


def gap_histogram(raw_gaps: np.ndarray, *, index_bits: int) -> tuple[np.ndarray, int]:
    """``(histogram of the gap symbols, number of fillers)`` for ``index_bits``, no encoding.

    Example:
        >>> hist, fillers = gap_histogram(np.array([1, 10]), index_bits=2)
        >>> hist.tolist(), fillers
        ([0, 1, 1, 2], 2)
    """
    span = 1 << _check_bits(index_bits)
    raw = np.asarray(raw_gaps, dtype=np.int64)
    fillers = int((raw // span).sum())
    hist = np.bincount(raw % span, minlength=span)[:span].astype(np.int64)
    hist[span - 1] += fillers
    return hist, fillers


def choose_index_bits(
    raw_gaps: np.ndarray,
    cost: Callable[[np.ndarray, int], float],
    *,
    candidates: range = SEARCH_BITS,
) -> int:
    """The index width with the smallest ``cost(gap_histogram, fillers)``.

    Candidates wider than the largest gap needs are skipped (they add nothing but alphabet).

    Example:
        >>> raw = np.array([0, 0, 40])
        >>> choose_index_bits(raw, lambda hist, fillers: fillers * 8 + hist.size)
        4
    """
    raw = np.asarray(raw_gaps, dtype=np.int64)
    need = max(1, int(raw.max()).bit_length()) if raw.size else 1
    best_bits, best_cost = candidates[0], float("inf")
    for bits in candidates:
        hist, fillers = gap_histogram(raw, index_bits=bits)
        c = cost(hist, fillers)
        if c < best_cost:
            best_bits, best_cost = bits, c
        if bits >= need:
            break
    return best_bits
