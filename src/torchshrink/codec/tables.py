"""Compact Huffman code-length tables, and Rice codes that need no table at all.

A canonical Huffman code is fully described by its code lengths (:mod:`.huffman`). Version 1
files stored one byte per symbol; here a table is a LEB128 varint symbol count, one byte
``w`` (bits per length) and the lengths bit-packed at ``w`` bits each (MSB first), trimmed
after the last used symbol. Lengths are at most 32, so ``w <= 6``: a 512-symbol gap table
of 14-bit codes takes 2 + 1 + 256 bytes instead of 512.

A *Rice code* with parameter ``k`` gives symbol ``g`` the length ``(g >> k) + 1 + k`` (unary
quotient, stop bit, ``k`` remainder bits); geometric gap distributions, as a random mask
gives, are coded within a few hundredths of a bit per symbol of their entropy, and the table
is just ``k``. Expressed as code lengths, a Rice code decodes with the same canonical decoder
(its truncated alphabet is an incomplete prefix code, which the decoder accepts).

Example:
    >>> import numpy as np
    >>> packed = pack_lengths(np.array([1, 2, 3, 3, 0, 0]))
    >>> packed.size, unpack_lengths(packed).tolist()
    (3, [1, 2, 3, 3])
    >>> rice_lengths(8, k=1).tolist()
    [2, 2, 3, 3, 4, 4, 5, 5]
"""

from __future__ import annotations

import numpy as np

from torchshrink.codec.huffman import HARD_MAX_LENGTH
from torchshrink.core.errors import ModelFileError

MAX_SYMBOLS = 1 << 24  # a table with more symbols than this is corrupt


def _varint(n: int) -> list[int]:
    out = []
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return out


def _read_varint(data: np.ndarray) -> tuple[int, int]:
    value = shift = 0
    for i in range(min(int(data.size), 4)):
        byte = int(data[i])
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    raise ModelFileError("bad Huffman code table: malformed symbol count")


def packed_size(lengths: np.ndarray) -> int:
    """Bytes :func:`pack_lengths` writes for ``lengths`` (without packing them)."""
    used = np.flatnonzero(lengths)
    n = int(used[-1]) + 1 if used.size else 0
    w = int(np.max(lengths[:n])).bit_length() if n else 0
    return len(_varint(n)) + 1 + (n * w + 7) // 8


def pack_lengths(lengths: np.ndarray) -> np.ndarray:
    """The uint8 bytes of a code-length table (trimmed after its last used symbol).

    Example:
        >>> pack_lengths(np.array([2, 2, 1])).tolist()  # n=3, w=2, bits 10 10 01
        [3, 2, 164]
    """
    ls = np.asarray(lengths, dtype=np.int64).reshape(-1)
    used = np.flatnonzero(ls)
    ls = ls[: int(used[-1]) + 1] if used.size else ls[:0]
    w = int(ls.max()).bit_length() if ls.size else 0
    head = np.array([*_varint(ls.size), w], dtype=np.uint8)
    if not ls.size:
        return head
    bits = (ls[:, None] >> np.arange(w - 1, -1, -1)) & 1  # (n, w) MSB first
    return np.concatenate([head, np.packbits(bits.astype(np.uint8).reshape(-1))])


def unpack_lengths(data: np.ndarray) -> np.ndarray:
    """The code lengths (int64) stored by :func:`pack_lengths`.

    Raises:
        ModelFileError: a malformed table (bad count or width, wrong number of bytes).
    """
    buf = np.asarray(data, dtype=np.uint8).reshape(-1)
    n, at = _read_varint(buf)
    if n > MAX_SYMBOLS or at >= buf.size:
        raise ModelFileError(f"bad Huffman code table: {n} symbols in {buf.size} bytes")
    w = int(buf[at])
    need = at + 1 + (n * w + 7) // 8
    if w > HARD_MAX_LENGTH.bit_length() or (n and not w) or buf.size != need:
        raise ModelFileError(
            f"bad Huffman code table: {n} lengths of {w} bits need {need} bytes, got {buf.size}"
        )
    bits = np.unpackbits(buf[at + 1 :])[: n * w].reshape(n, w).astype(np.int64)  # (n, w)
    return bits @ (1 << np.arange(w - 1, -1, -1, dtype=np.int64))


def rice_lengths(alphabet: int, *, k: int) -> np.ndarray:
    """Code lengths of the Rice code with parameter ``k`` over symbols ``0 .. alphabet - 1``."""
    return (np.arange(alphabet, dtype=np.int64) >> k) + 1 + k


def rice_ks(alphabet: int) -> list[int]:
    """The Rice parameters whose longest code fits the decoder's 32-bit limit."""
    return [k for k in range(0, 31) if ((alphabet - 1) >> k) + 1 + k <= HARD_MAX_LENGTH and k < 24]


def best_rice(hist: np.ndarray) -> tuple[int, int] | None:
    """``(k, bits)`` of the cheapest Rice code for symbol counts ``hist``; ``None`` if none fits.

    Example:
        >>> best_rice(np.array([8, 4, 2, 1]))
        (0, 26)
    """
    h = np.asarray(hist, dtype=np.int64)
    best: tuple[int, int] | None = None
    for k in rice_ks(h.size):
        bits = int(np.dot(h, rice_lengths(h.size, k=k)))
        if best is None or bits < best[1]:
            best = (k, bits)
    return best
