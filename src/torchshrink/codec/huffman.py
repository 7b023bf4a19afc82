"""Canonical, length-limited Huffman coding of integer symbol arrays, vectorised with numpy.

A code is described by its **code lengths** alone (``lengths[s]`` bits for symbol ``s``, 0 for
an unused symbol): canonical code assignment (as in DEFLATE) rebuilds the codewords from the
lengths, so the lengths are the only table a file needs to store.

- :func:`code_lengths` builds optimal Huffman lengths from symbol frequencies. Lengths are
  limited to ``max_length`` bits by *frequency flattening*: while the longest code is too long,
  every non-zero frequency is halved (rounded up, never to 0) and the code is rebuilt. This
  terminates (all-equal frequencies give a balanced tree of ``ceil(log2 n)`` bits) and only
  triggers for extremely skewed inputs, where the loss against package-merge is negligible.
  A single used symbol gets a 1-bit code, so the stream size is always the sum of lengths.
- :func:`encode` packs codewords MSB-first into bytes (a bit matrix per chunk, no Python loop
  over symbols).
- :func:`decode` peeks ``L`` bits at *every* bit position of the stream at once, finds each
  position's codeword length by binary search over the canonical limits, and then follows the
  chain "next start = start + length" by pointer doubling: ``log2(count)`` gathers instead of a
  Python loop over symbols. Long streams are decoded in windows to bound memory.

Corrupt input (lengths that violate the Kraft inequality, bit patterns that are no codeword,
a stream that ends early or carries trailing bytes) raises
:class:`~torchshrink.core.errors.ModelFileError`; decoding runs a fixed number of steps, so it
never hangs.

Example:
    >>> import numpy as np
    >>> sym = np.array([0, 0, 0, 1, 2, 0, 1])
    >>> lengths = code_lengths(np.bincount(sym))
    >>> lengths.tolist()
    [1, 2, 2]
    >>> data = encode(sym, lengths)
    >>> len(data), decode(data, lengths, len(sym)).tolist()
    (2, [0, 0, 0, 1, 2, 0, 1])
"""

from __future__ import annotations

import heapq

import numpy as np

from torchshrink.core.errors import ConfigError, ModelFileError

MAX_LENGTH = 24  # default code length limit (bits)
HARD_MAX_LENGTH = 32  # no table may use longer codes (a peek must fit in 64-bit arithmetic)
_ENCODE_CHUNK = 1 << 20  # symbols per encoding chunk
_DECODE_WINDOW = 1 << 20  # symbols per decoding window


def code_lengths(freqs: np.ndarray, *, max_length: int = MAX_LENGTH) -> np.ndarray:
    """Huffman code lengths (uint8, one per symbol, 0 = unused) for ``freqs``.

    Args:
        freqs: non-negative counts, one per symbol of the alphabet ``0 .. len(freqs) - 1``.
        max_length: longest allowed code in bits (1 to 32).

    Raises:
        ConfigError: negative frequencies, a bad ``max_length``, or more used symbols than
            ``2**max_length`` codes can tell apart.

    Example:
        >>> code_lengths(np.array([5, 0, 1, 1])).tolist()
        [1, 0, 2, 2]
    """
    freqs = np.asarray(freqs, dtype=np.int64).reshape(-1)
    if not 1 <= max_length <= HARD_MAX_LENGTH:
        raise ConfigError(f"max_length must be in 1..{HARD_MAX_LENGTH}, got {max_length}")
    if (freqs < 0).any():
        raise ConfigError("symbol frequencies must be non-negative")
    used = np.flatnonzero(freqs)
    if used.size > (1 << max_length):
        raise ConfigError(
            f"{used.size} symbols cannot be coded with codes of at most {max_length} bits"
        )
    out = np.zeros(freqs.size, dtype=np.uint8)
    if used.size == 1:
        out[used] = 1
    if used.size <= 1:
        return out
    f = freqs[used]
    while True:
        depth = _huffman_depths(f)
        if int(depth.max()) <= max_length:
            break
        f = (f + 1) // 2  # flatten the distribution; counts stay >= 1
    out[used] = depth
    return out


def _huffman_depths(freqs: np.ndarray) -> np.ndarray:
    """Leaf depths of a Huffman tree over ``freqs`` (all > 0, at least two)."""
    n = freqs.size
    parent = np.zeros(2 * n - 1, dtype=np.int64)
    # (weight, tie-break id, node): deterministic codes for equal weights
    heap = [(int(w), i, i) for i, w in enumerate(freqs.tolist())]
    heapq.heapify(heap)
    nxt = n
    while len(heap) > 1:
        w1, _, a = heapq.heappop(heap)
        w2, _, b = heapq.heappop(heap)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (w1 + w2, nxt, nxt))
        nxt += 1
    depth = np.zeros(2 * n - 1, dtype=np.int64)
    # Internal nodes are created after their children: walk from the root downwards.
    for node in range(2 * n - 3, -1, -1):
        depth[node] = depth[parent[node]] + 1
    return depth[:n]


def kraft_sum(lengths: np.ndarray) -> float:
    """``sum(2**-l)`` over used symbols; a prefix code exists iff it is ``<= 1``."""
    ls = np.asarray(lengths, dtype=np.int64)
    ls = ls[ls > 0]
    return float(np.sum(np.ldexp(1.0, -ls))) if ls.size else 0.0


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Canonical codewords (uint64, right-aligned, ``lengths[s]`` bits) for the lengths.

    Codes are assigned in order of (length, symbol), each the previous one plus one, shifted
    left when the length grows (DEFLATE's rule).

    Raises:
        ModelFileError: a length above 32 bits or a Kraft sum above 1 (not a prefix code).

    Example:
        >>> [format(int(c), "b") for c in canonical_codes(np.array([2, 1, 3, 3]))]
        ['10', '0', '110', '111']
    """
    ls = _check_lengths(lengths)
    counts = np.bincount(ls, minlength=HARD_MAX_LENGTH + 1)
    counts[0] = 0
    first = np.zeros(HARD_MAX_LENGTH + 2, dtype=np.int64)
    code = 0
    for length in range(1, HARD_MAX_LENGTH + 1):
        code = (code + int(counts[length - 1])) << 1
        first[length] = code
    order = np.lexsort((np.arange(ls.size), ls))  # by length, then symbol
    sorted_len = ls[order]
    start = np.searchsorted(sorted_len, sorted_len, side="left")  # first index of each length
    codes = np.zeros(ls.size, dtype=np.uint64)
    codes[order] = (first[sorted_len] + (np.arange(ls.size) - start)).astype(np.uint64)
    codes[ls == 0] = 0
    return codes


def _check_lengths(lengths: np.ndarray) -> np.ndarray:
    ls = np.asarray(lengths).astype(np.int64).reshape(-1)
    if ls.size and (ls.min() < 0 or ls.max() > HARD_MAX_LENGTH):
        raise ModelFileError(
            f"bad Huffman code table: code lengths must be in 0..{HARD_MAX_LENGTH}, got "
            f"{int(ls.min())}..{int(ls.max())}"
        )
    if kraft_sum(ls) > 1.0:
        raise ModelFileError(
            f"bad Huffman code table: the code lengths are not a prefix code (Kraft sum "
            f"{kraft_sum(ls):.4g} > 1)"
        )
    return ls


def coded_bits(freqs: np.ndarray, lengths: np.ndarray) -> int:
    """Bits needed to code symbols with counts ``freqs`` using ``lengths``.

    Example:
        >>> coded_bits(np.array([3, 1]), np.array([1, 1]))
        4
    """
    return int(np.dot(np.asarray(freqs, dtype=np.int64), np.asarray(lengths, dtype=np.int64)))


def encode(symbols: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Huffman-code ``symbols`` into a uint8 array of ``ceil(sum of code lengths / 8)`` bytes.

    Codewords are written MSB-first; the last byte is padded with zero bits.

    Raises:
        ConfigError: a symbol outside the table or with no code (length 0).

    Example:
        >>> encode(np.array([1, 1, 0]), np.array([1, 1])).tolist()  # bits 1 1 0
        [192]
    """
    sym = np.asarray(symbols).astype(np.int64).reshape(-1)
    ls = np.asarray(lengths).astype(np.int64).reshape(-1)
    if sym.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if sym.min() < 0 or sym.max() >= ls.size or (ls[sym] == 0).any():
        raise ConfigError("encode: a symbol is outside the code table or has no code")
    codes = canonical_codes(ls)
    total = int(ls[sym].sum())
    out = np.zeros((total + 7) // 8 + 8, dtype=np.float64)  # per-byte sums (exact below 2**53)
    base = 0
    for lo in range(0, sym.size, _ENCODE_CHUNK):
        s = sym[lo : lo + _ENCODE_CHUNK]
        n_len = ls[s]  # (n,)
        first_bit = base + np.cumsum(n_len) - n_len  # (n,) stream offset of each codeword
        base += int(n_len.sum())
        # Each codeword (<= 32 bits) lies within 5 bytes starting at its first byte; place it
        # left-aligned in a 40-bit window there. Codewords never overlap, so per-byte sums of
        # their pieces equal the bitwise OR.
        window = codes[s] << (
            np.uint64(40) - n_len.astype(np.uint64) - (first_bit % 8).astype(np.uint64)
        )
        byte0 = first_bit // 8
        for k in range(5):
            piece = (window >> np.uint64(8 * (4 - k))) & np.uint64(0xFF)
            out += np.bincount(byte0 + k, weights=piece.astype(np.float64), minlength=out.size)
    return out[: (total + 7) // 8].astype(np.uint8)


def decode(data: np.ndarray, lengths: np.ndarray, count: int) -> np.ndarray:
    """Decode ``count`` symbols (int64) from the bytes :func:`encode` produced.

    Raises:
        ModelFileError: a bad table, an invalid codeword, a stream that ends before ``count``
            symbols, or bytes left over after them.

    Example:
        >>> decode(np.array([192], dtype=np.uint8), np.array([1, 1]), 3).tolist()
        [1, 1, 0]
    """
    buf = np.asarray(data, dtype=np.uint8).reshape(-1)
    ls = _check_lengths(lengths)
    if count < 0:
        raise ModelFileError(f"Huffman stream: negative symbol count {count}")
    if count == 0:
        if buf.size:
            raise ModelFileError(f"Huffman stream: {buf.size} bytes for 0 symbols")
        return np.zeros(0, dtype=np.int64)
    if not (ls > 0).any():
        raise ModelFileError("bad Huffman code table: no symbol has a code")
    t = _DecodeTables(ls)
    padded = np.concatenate([buf, np.zeros(8, dtype=np.uint8)])  # peeks may run past the end
    total_bits = 8 * buf.size
    out = np.empty(count, dtype=np.int64)
    pos = 0
    mean_bits = total_bits / count  # windows after the first are sized by the average code
    for lo in range(0, count, _DECODE_WINDOW):
        n = min(_DECODE_WINDOW, count - lo)
        left = total_bits - pos
        guess = min(left, n * t.width, int(n * mean_bits * 1.25) + 64 * t.width)
        got = _decode_window(padded, pos, n, guess, t, done=lo, retry=guess < left)
        if got is None:  # the guessed window was too short: use the worst case
            span = min(left, n * t.width)
            got = _decode_window(padded, pos, n, span, t, done=lo, retry=False)
        assert got is not None  # a window of the worst-case length always suffices
        out[lo : lo + n], pos = got
    if (pos + 7) // 8 != buf.size:
        raise ModelFileError(
            f"Huffman stream: {buf.size} bytes, but {count} symbols end at bit {pos}"
        )
    return out


class _DecodeTables:
    """Canonical decoding tables for one code of longest length ``width``.

    Length-``l`` codes, left-aligned to ``width`` bits, are exactly the values in
    ``[limit[l-1], limit[l])``: consecutive and increasing in ``l``. A direct lookup table
    over all ``2**width`` peeks replaces the binary search for ``width <= 16`` (and up to 22
    bits for streams long enough to pay for the table).
    """

    def __init__(self, ls: np.ndarray) -> None:
        self.width = int(ls.max())
        counts = np.bincount(ls, minlength=self.width + 1)[1:]  # (width,) codes per length
        first = np.zeros(self.width, dtype=np.int64)  # first code of each length
        code = 0
        for i in range(1, self.width):
            code = (code + int(counts[i - 1])) << 1
            first[i] = code
        self.first = first
        self.shift = self.width - np.arange(1, self.width + 1)  # (width,)
        self.limit = (first + counts) << self.shift  # (width,)
        self.offset = np.concatenate([[0], np.cumsum(counts)[:-1]])  # perm index per length
        used = np.flatnonzero(ls)
        self.perm = used[np.lexsort((used, ls[used]))]  # symbols by (length, symbol)
        self.lut: np.ndarray | None = None
        if self.width <= 16:
            self.lut = self.lengths(np.arange(1 << self.width))

    def lengths(self, peek: np.ndarray) -> np.ndarray:
        """Code length (1..width) of the codeword at each peek; 0 where none is valid."""
        if self.lut is None and self.width <= 22 and peek.size >= 4 << self.width:
            self.lut = self.lengths(np.arange(1 << self.width))  # pays off on long streams
        if self.lut is not None:
            return self.lut[peek]
        li = np.searchsorted(self.limit, peek, side="right")  # == width if invalid
        return np.where(li < self.width, li + 1, 0).astype(np.int8)

    def symbols(self, peek: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Symbols of the (valid) codewords at ``peek`` with their ``length``."""
        li = length.astype(np.int64) - 1
        return self.perm[self.offset[li] + (peek >> self.shift[li]) - self.first[li]]


def _decode_window(
    padded: np.ndarray,
    start: int,
    n: int,
    span: int,
    t: _DecodeTables,
    *,
    done: int,
    retry: bool,
) -> tuple[np.ndarray, int] | None:
    """Decode ``n`` symbols from the ``span`` bits at bit ``start``: the symbols and end bit.

    With ``retry``, returns ``None`` instead of raising when the chain leaves the window (it
    may just be too short; the caller retries with the worst-case length).
    """
    if span <= 0:
        raise ModelFileError(f"Huffman stream ends after {done} symbols")
    b0, nbytes = start // 8, (start % 8 + span + 7) // 8
    chunk = padded[b0 : b0 + nbytes + 8].astype(np.uint64)
    # 40-bit big-endian words at every byte, then shifted for each of the 8 bit offsets.
    word = np.zeros(nbytes, dtype=np.uint64)
    for k in range(5):
        word = (word << np.uint64(8)) | chunk[k : k + nbytes]
    r = np.arange(8, dtype=np.uint64)
    peek = (word[:, None] << r[None, :]) & np.uint64((1 << 40) - 1)  # (nbytes, 8)
    peek = (peek >> np.uint64(40 - t.width)).reshape(-1)[start % 8 : start % 8 + span]
    peek = peek.astype(np.int64)  # (span,) the next `width` bits at every bit position
    length = t.lengths(peek)  # (span,) 0 = no codeword starts with these bits
    # Successor of every bit position; two sinks (fixed points): window end and invalid.
    end, dead = span, span + 1
    nxt = np.arange(span, dtype=np.int64) + length
    nxt[(length == 0) | (nxt > span)] = dead
    nxt = np.concatenate([nxt, [end, dead]])  # (span + 2,)
    starts = _chain(nxt, n)
    bad = np.flatnonzero(starts >= span)
    if bad.size:
        i = int(bad[0])
        if retry:
            return None
        what = "an invalid codeword" if starts[i] == dead else "the end of the stream"
        raise ModelFileError(f"Huffman stream: {what} after {done + i} symbols")
    last = int(starts[-1])
    stop = int(nxt[last])
    if stop > span:
        if retry:
            return None
        raise ModelFileError(f"Huffman stream ends inside symbol {done + n - 1}")
    return t.symbols(peek[starts], length[starts]), start + stop


def _chain(nxt: np.ndarray, n: int) -> np.ndarray:
    """``[0, nxt(0), nxt(nxt(0)), ...]`` (``n`` items) without a Python loop over all of them.

    ``nxt`` is raised to the power ``step = 2**j`` by ``j`` squarings (full-array gathers), a
    short Python loop walks the chain in strides of ``step``, and ``step - 1`` gathers over
    the stride starts fill in the rest. ``j`` balances the two costs: a squaring costs about
    ``len(nxt)`` element moves, a Python step about 150 of them.
    """
    costs = [k * nxt.size + 150 * (n >> k) for k in range(13)]
    j = int(np.argmin(costs))
    step = 1 << j
    jump = nxt
    for _ in range(j):
        jump = np.take(jump, jump)
    strides = (n + step - 1) // step
    starts = np.empty((step, strides), dtype=np.int64)  # starts[k, i] = start of i*step + k
    p = 0
    row = starts[0]
    for i in range(strides):
        row[i] = p
        p = int(jump[p])
    for k in range(1, step):
        starts[k] = np.take(nxt, starts[k - 1])
    return starts.T.reshape(-1)[:n]
