"""Code one tensor as Huffman-coded cluster indices, codebook and relative positions, and back.

A tensor with few distinct values (weight sharing) and/or many zeros (pruning) is stored as one
uint8 *blob* of concatenated parts, in one of three modes:

- ``dense``: codebook (the distinct non-zero values, raw bytes in the tensor's dtype) + the
  Huffman-coded index of every element (symbol 0 = zero, ``s >= 1`` = ``codebook[s - 1]``);
- ``sparse``: codebook + Huffman-coded indices of the non-zeros and fillers + Huffman-coded
  relative positions (:mod:`.sparse`, fillers carry symbol 0, the zero codeword);
- ``sparse_raw``: raw values of the non-zeros (and zero for fillers) + coded positions, for
  sparse tensors with too many distinct values for a codebook;
- ``raw``: the tensor's bytes as they are (codec version 2 keeps uncodable tensors, e.g.
  biases, in the one blob instead of as separate file entries; :func:`raw_tensor`).

Each Huffman stream is preceded by its table of code lengths: version 1 stored one uint8 per
symbol, version 2 packs them (:mod:`.tables`). Version 2 also chooses per tensor

- the scan order of the positions: row-major, or with the first two dimensions swapped
  (``transposed``: column-major for a Linear weight, input-channel-major for a conv), since
  pruning often empties whole input columns, which then become one long run;
- the code of the relative positions: Huffman with its table, or a Rice code (``rice: k``)
  that needs no table, whichever is smaller (the choice is recorded in the entry).

The mode with the fewest bytes wins; :func:`encode_tensor` returns ``None`` when no mode beats
the raw bytes. Values are copied bit for bit, so decoding is exact.

:func:`decode_state` is the ``"huffman"`` decoder that :func:`torchshrink.load` calls through
:mod:`torchshrink.core.filehooks`; importing this module registers it.

Example:
    >>> import torch
    >>> w = torch.tensor([0.0, 0.5, 0.0, 0.0, -0.25, 0.5] * 50)
    >>> coded = encode_tensor(w, index_bits=None)
    >>> coded.mode, coded.clusters, torch.equal(decode_tensor(coded.meta(), coded.blob), w)
    ('sparse', 2, True)
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from torchshrink.codec import huffman, sparse, tables
from torchshrink.core.errors import ModelFileError
from torchshrink.core.filehooks import register_decoder
from torchshrink.core.modelfile import EXTRA_PREFIX

CODEC = "huffman"
CODEC_VERSION = 3
DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
PARTS = {
    "dense": ("codebook", "index_table", "index"),
    "sparse": ("codebook", "index_table", "index", "gap_table", "gaps"),
    "sparse_raw": ("values", "gap_table", "gaps"),
    "raw": ("values",),
}
OVERHEAD = 16  # approx. deflated JSON bytes a coded entry adds over a raw one
MAX_NUMEL = 1 << 34  # refuse absurd shapes from a corrupt file before allocating


def extra_name(key: str) -> str:
    """Name of the extra tensor that holds the blob of state-dict ``key``."""
    return f"{CODEC}/{key}"


@dataclass(frozen=True)
class CodedTensor:
    """One tensor in coded form.

    Attributes:
        mode: ``"dense"``, ``"sparse"`` or ``"sparse_raw"``.
        shape: the tensor's shape.
        dtype: its dtype name (a key of :data:`DTYPES`).
        nonzeros: number of non-zero elements.
        clusters: codebook size (distinct non-zero values; 0 for ``sparse_raw``).
        entries: coded entries (all elements for ``dense``; non-zeros + fillers otherwise).
        fillers: filler entries inserted to bridge long runs of zeros.
        index_bits: bits per relative index (0 for ``dense``).
        parts: bytes of each part of ``blob``, in order.
        blob: the uint8 bytes.
        rice: Rice parameter of the position code, or -1 for a Huffman code with its table.
        transposed: positions are scanned with the first two dimensions swapped.
        live: positions count only within the rows and columns that hold a non-zero (the scan
            viewed as a matrix of its first dimension by the rest); the blob starts with a
            bit mask of those rows and columns (the ``live`` part, version 3).
    """

    mode: str
    shape: tuple[int, ...]
    dtype: str
    nonzeros: int
    clusters: int
    entries: int
    fillers: int
    index_bits: int
    parts: dict[str, int]
    blob: torch.Tensor
    rice: int = -1
    transposed: bool = False
    live: bool = False

    def meta(self) -> dict[str, Any]:
        """The JSON entry stored in the file's ``compression`` dict (version 2, or 3 when live).

        The checksum covers the file's whole blob (:func:`decode_state`), not each tensor.
        """
        out: dict[str, Any] = {"mode": self.mode, "shape": list(self.shape)}
        if self.dtype != "float32":
            out["dtype"] = self.dtype
        if self.mode != "raw":
            out.update(
                clusters=self.clusters,
                nonzeros=self.nonzeros,
                entries=self.entries,
                index_bits=self.index_bits,
            )
        out["parts"] = dict(self.parts)
        if self.rice >= 0:
            out["rice"] = self.rice
        if self.transposed:
            out["transposed"] = True
        if self.live:
            out["live"] = True
        return out


def _raw_bytes(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


def _coded_size(hist: np.ndarray, max_len: int) -> tuple[int, np.ndarray]:
    """Bytes of the packed table plus stream for symbol counts ``hist``, and the code lengths."""
    lengths = huffman.code_lengths(hist, max_length=max_len)
    return tables.packed_size(lengths) + (huffman.coded_bits(hist, lengths) + 7) // 8, lengths


def _gap_size(hist: np.ndarray, max_len: int) -> tuple[int, int]:
    """Bytes of the cheaper position code for gap counts ``hist``, and its Rice k (-1: Huffman)."""
    size = _coded_size(hist, max_len)[0]
    rice = tables.best_rice(hist)
    if rice is not None and (rice[1] + 7) // 8 < size:
        return (rice[1] + 7) // 8, rice[0]
    return size, -1


def _scan(t: torch.Tensor, transposed: bool) -> torch.Tensor:
    """``t`` flattened in the scan order of its positions (first two dims swapped if asked)."""
    return (t.transpose(0, 1) if transposed else t).reshape(-1)


def _live_positions(t: torch.Tensor, transposed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-zero positions within the live rows x live columns of the scan, and the two masks.

    The scan is viewed as a matrix: its first dimension by the rest. A row or column is live
    when it holds a non-zero; positions are counted in the matrix of live rows and columns
    only, in the same (row-major) order as the scan.
    """
    m = _scan(t, transposed).reshape(t.shape[1] if transposed else t.shape[0], -1) != 0
    rows, cols = m.any(1), m.any(0)  # (R,), (C,)
    sub = m[rows][:, cols].reshape(-1)
    return torch.nonzero(sub).reshape(-1).numpy(), rows.numpy(), cols.numpy()


def _live_flat(gaps: np.ndarray, live: np.ndarray, n_rows: int) -> np.ndarray:
    """Scan positions of the entries coded within live rows x columns (the decoder's map)."""
    rows, cols = np.flatnonzero(live[:n_rows]), np.flatnonzero(live[n_rows:])
    pos = sparse.absolute_positions(gaps, numel=rows.size * cols.size)
    if cols.size == 0:
        return pos
    return rows[pos // cols.size] * (live.size - n_rows) + cols[pos % cols.size]


def raw_tensor(t: torch.Tensor) -> CodedTensor:
    """A tensor that no coding shrinks, as a ``raw`` entry (its bytes, bit for bit).

    Example:
        >>> raw_tensor(torch.ones(3)).parts
        {'values': 12}
    """
    flat = t.detach().cpu().reshape(-1)
    data = _raw_bytes(flat)
    return CodedTensor(
        mode="raw",
        shape=tuple(t.shape),
        dtype=str(t.dtype).removeprefix("torch."),
        nonzeros=int(torch.count_nonzero(flat)),
        clusters=0,
        entries=0,
        fillers=0,
        index_bits=0,
        parts={"values": int(data.size)},
        blob=torch.from_numpy(data.copy()),
    )


def encode_tensor(
    t: torch.Tensor,
    *,
    index_bits: int | None = None,
    max_codebook: int = 4096,
    max_code_length: int = huffman.MAX_LENGTH,
) -> CodedTensor | None:
    """Code ``t`` in its smallest mode, or ``None`` if it is better stored raw.

    Args:
        t: a floating-point tensor (float32 / float16 / bfloat16 / float64), all finite.
        index_bits: bits per relative index for the sparse modes; ``None`` picks the width
            with the smallest coded size.
        max_codebook: most distinct non-zero values coded with a codebook.
        max_code_length: Huffman code length limit in bits.

    Example:
        >>> encode_tensor(torch.randn(100)) is None  # 100 distinct values: raw is smaller
        True
    """
    dtype = str(t.dtype).removeprefix("torch.")
    t = t.detach().cpu()
    flat = t.reshape(-1)
    if dtype not in DTYPES or flat.numel() == 0 or not bool(torch.isfinite(flat).all()):
        return None
    numel, isz = flat.numel(), flat.element_size()
    codebook, inverse_all = torch.unique(flat, return_inverse=True)  # sorted distinct values
    nonzero_cb = codebook != 0
    codebook = codebook[nonzero_cb]  # distinct non-zeros (-0.0 counts as zero, as in nonzero)
    clustered = codebook.numel() <= max_codebook
    L = max_code_length
    # (bytes, mode, index_bits, transposed, live)
    options: list[tuple[float, str, int, bool, bool]] = []
    nnz = int(torch.count_nonzero(flat))
    counts = np.zeros(codebook.numel() + 1, dtype=np.int64)
    if clustered:
        counts[1:] = torch.bincount(inverse_all[flat != 0], minlength=nonzero_cb.numel())[
            nonzero_cb
        ].numpy()
        dense_hist = counts.copy()
        dense_hist[0] = numel - nnz
        options.append(
            (_coded_size(dense_hist, L)[0] + codebook.numel() * isz, "dense", 0, False, False)
        )
    two_orders = t.dim() >= 2 and t.shape[0] > 1 and t.shape[1] > 1
    orders = (False, True) if two_orders else (False,)
    lives = (False, True) if t.dim() >= 2 else (False,)  # rows x columns need a matrix
    for transposed, live in [(tr, lv) for tr in orders for lv in lives]:
        if live:
            positions, rows, cols = _live_positions(t, transposed)
            mask_bytes = (rows.size + cols.size + 7) // 8
        else:
            positions = torch.nonzero(_scan(t, transposed)).reshape(-1).numpy()  # sorted
            mask_bytes = 0
        raw_gaps = sparse.zero_gaps(positions)
        for mode in ("sparse", "sparse_raw") if clustered else ("sparse_raw",):

            def cost(
                hist: np.ndarray, fillers: int, _c: bool = mode == "sparse", _m: int = mask_bytes
            ) -> float:
                size = _gap_size(hist, L)[0] + _m
                if _c:
                    idx = counts.copy()
                    idx[0] += fillers
                    return size + _coded_size(idx, L)[0] + codebook.numel() * isz
                return size + (nnz + fillers) * isz

            bits = (
                index_bits if index_bits is not None else sparse.choose_index_bits(raw_gaps, cost)
            )
            hist, fillers = sparse.gap_histogram(raw_gaps, index_bits=bits)
            # a live entry costs a few header bytes more: it must win by more than that
            options.append((cost(hist, fillers) + (4 if live else 0), mode, bits, transposed, live))
    size, mode, bits, transposed, live = min(options)
    if size + OVERHEAD >= numel * isz:
        return None
    return _build(mode, bits, t, transposed, live, max_codebook=max_codebook, max_len=L)


def _build(
    mode: str,
    bits: int,
    t: torch.Tensor,
    transposed: bool,
    live: bool = False,
    *,
    max_codebook: int,
    max_len: int,
) -> CodedTensor:
    flat = _scan(t, transposed)  # (numel,) in scan order
    positions = torch.nonzero(flat).reshape(-1).numpy()  # (nnz,) sorted
    values = flat[torch.from_numpy(positions)]  # (nnz,)
    codebook, inverse = torch.unique(values, return_inverse=True)  # sorted distinct non-zeros
    parts: dict[str, np.ndarray] = {}
    live = live and mode != "dense"
    if live:  # the same entries in the same order, counted within live rows x columns only
        positions, rows, cols = _live_positions(t, transposed)
        parts["live"] = np.packbits(np.concatenate([rows, cols]))
    nnz, numel = positions.size, t.numel()
    symbols = inverse.numpy().astype(np.int64) + 1  # (nnz,) 0 is the zero codeword
    rice = -1
    if mode == "dense":
        entries, fillers = np.zeros(numel, dtype=np.int64), 0
        entries[positions] = symbols
    else:
        gaps, filler = sparse.relative_indices(positions, index_bits=bits)
        fillers = int(filler.sum())
        entries = np.zeros(gaps.size, dtype=np.int64)
        entries[~filler] = symbols
    if mode == "sparse_raw":
        vals = torch.zeros(entries.size, dtype=t.dtype)
        vals[torch.from_numpy(~filler)] = values
        parts["values"] = _raw_bytes(vals)
    else:
        lengths = huffman.code_lengths(np.bincount(entries, minlength=1), max_length=max_len)
        parts["codebook"] = _raw_bytes(codebook)
        parts["index_table"] = tables.pack_lengths(lengths)
        parts["index"] = huffman.encode(entries, lengths)
    if mode != "dense":
        hist = np.bincount(gaps, minlength=1 << bits)
        _, rice = _gap_size(hist, max_len)
        if rice >= 0:
            lengths = tables.rice_lengths(1 << bits, k=rice)
            parts["gap_table"] = np.zeros(0, dtype=np.uint8)
        else:
            lengths = huffman.code_lengths(hist, max_length=max_len)
            parts["gap_table"] = tables.pack_lengths(lengths)
        parts["gaps"] = huffman.encode(gaps, lengths)
    blob = np.concatenate([p.astype(np.uint8) for p in parts.values()])
    return CodedTensor(
        mode=mode,
        shape=tuple(t.shape),
        dtype=str(t.dtype).removeprefix("torch."),
        nonzeros=nnz,
        clusters=0 if mode == "sparse_raw" else codebook.numel(),
        entries=entries.size,
        fillers=fillers,
        index_bits=0 if mode == "dense" else bits,
        parts={k: int(v.size) for k, v in parts.items()},
        blob=torch.from_numpy(blob),
        rice=rice,
        transposed=transposed and mode != "dense",
        live=live,
    )


def _int(meta: dict[str, Any], field: str, lo: int, hi: int) -> int:
    value = meta.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ModelFileError(f"field '{field}' must be an integer in {lo}..{hi}, got {value!r}")
    return value


def decode_tensor(
    meta: dict[str, Any], blob: torch.Tensor, *, version: int = CODEC_VERSION
) -> torch.Tensor:
    """Rebuild the tensor that :func:`encode_tensor` coded (bit-exact values).

    Args:
        meta: its entry (:meth:`CodedTensor.meta`).
        blob: its bytes.
        version: the codec version of the file (1: byte tables, a checksum in every entry).

    Raises:
        ModelFileError: a malformed entry, a checksum mismatch or corrupt coded streams.
    """
    mode, dtype = meta.get("mode"), meta.get("dtype", "float32" if version >= 2 else None)
    if mode not in PARTS or dtype not in DTYPES:
        raise ModelFileError(f"unknown coding mode {mode!r} or dtype {dtype!r}")
    shape = meta.get("shape")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ModelFileError(f"malformed shape {shape!r}")
    numel = math.prod(shape)
    if numel > MAX_NUMEL:
        raise ModelFileError(f"shape {shape} has more than {MAX_NUMEL} elements")
    data = blob.reshape(-1).numpy() if blob.dtype == torch.uint8 else None
    sizes = meta.get("parts")
    live = meta.get("live", False) is True
    if live and (version < 3 or mode not in ("sparse", "sparse_raw") or len(shape) < 2):
        raise ModelFileError("'live' positions need codec version 3, a sparse mode and 2+ dims")
    expected = ("live", *PARTS[mode]) if live else PARTS[mode]
    if data is None or not isinstance(sizes, dict) or tuple(sizes) != expected:
        raise ModelFileError(f"the parts of a '{mode}' tensor must be {expected}")
    n = {k: _int(sizes, k, 0, data.size) for k in sizes}
    if sum(n.values()) != data.size:
        raise ModelFileError(f"parts total {sum(n.values())} bytes, the blob has {data.size}")
    if (version < 2 or "crc32" in meta) and zlib.crc32(data.tobytes()) != meta.get("crc32"):
        raise ModelFileError("checksum mismatch: the coded bytes are corrupt")
    at = np.cumsum([0, *n.values()])
    part = {k: data[at[i] : at[i + 1]] for i, k in enumerate(n)}
    torch_dtype = DTYPES[dtype]
    isz = torch.empty(0, dtype=torch_dtype).element_size()
    if mode == "raw":
        if data.size != numel * isz:
            raise ModelFileError(f"{data.size} raw bytes for {numel} elements of {dtype}")
        return _from_bytes(data, torch_dtype).reshape(shape)

    def lengths_of(name: str) -> np.ndarray:  # version 1: one byte per symbol
        return tables.unpack_lengths(part[name]) if version >= 2 else part[name]

    entries = _int(meta, "entries", numel if mode == "dense" else 0, numel)
    if mode == "sparse_raw":
        if part["values"].size != entries * isz:
            raise ModelFileError(f"{part['values'].size} value bytes for {entries} entries")
        vals = _from_bytes(part["values"], torch_dtype)
    else:
        k = _int(meta, "clusters", 0, part["codebook"].size)
        if part["codebook"].size != k * isz:
            raise ModelFileError(f"{part['codebook'].size} codebook bytes for {k} clusters")
        table = torch.cat(
            [torch.zeros(1, dtype=torch_dtype), _from_bytes(part["codebook"], torch_dtype)]
        )
        symbols = huffman.decode(part["index"], lengths_of("index_table"), entries)
        if symbols.size and int(symbols.max()) > k:
            raise ModelFileError(f"cluster index {int(symbols.max())} beyond {k} clusters")
        vals = table[torch.from_numpy(symbols)]
    if mode == "dense":
        return vals.reshape(shape)
    bits = _int(meta, "index_bits", 1, sparse.MAX_INDEX_BITS)
    if "rice" in meta:
        k = _int(meta, "rice", 0, max(tables.rice_ks(1 << bits), default=-1))
        if part["gap_table"].size:
            raise ModelFileError("a Rice-coded position stream has no table")
        gap_lengths = tables.rice_lengths(1 << bits, k=k)
    else:
        gap_lengths = lengths_of("gap_table")
    gaps = huffman.decode(part["gaps"], gap_lengths, entries)
    if gaps.size and int(gaps.max()) >= 1 << bits:
        raise ModelFileError(f"relative index {int(gaps.max())} needs more than {bits} bits")
    transposed = meta.get("transposed", False) is True and len(shape) >= 2
    scan = [shape[1], shape[0], *shape[2:]] if transposed else shape
    out = torch.zeros(numel, dtype=torch_dtype)
    if live:
        n_rows = scan[0]
        n_cols = numel // n_rows if n_rows else 0
        if part["live"].size != (n_rows + n_cols + 7) // 8:
            raise ModelFileError(f"{part['live'].size} live-mask bytes for {n_rows} x {n_cols}")
        mask = np.unpackbits(part["live"])[: n_rows + n_cols].astype(bool)
        flat_pos = _live_flat(gaps, mask, n_rows)
    else:
        flat_pos = sparse.absolute_positions(gaps, numel=numel)
    out[torch.from_numpy(flat_pos)] = vals
    out = out.reshape(scan)
    return out.transpose(0, 1).contiguous() if transposed else out


def _from_bytes(data: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    if data.size == 0:  # an empty byte tensor cannot be viewed as another dtype
        return torch.zeros(0, dtype=dtype)
    return torch.from_numpy(data.copy()).view(dtype)


def decode_state(
    compression: dict[str, Any], state: dict[str, torch.Tensor], *, where: str
) -> dict[str, torch.Tensor]:
    """The file's tensors with every Huffman-coded tensor decoded under its own key.

    Registered as the ``"huffman"`` decoder of :mod:`torchshrink.core.filehooks`.

    Raises:
        ModelFileError: newer codec version, missing blob, or a corrupt coded tensor (the
            message names the tensor).
    """
    version = compression.get("codec_version")
    if not isinstance(version, int) or version > CODEC_VERSION:
        raise ModelFileError(
            f"'{where}' uses Huffman codec version {version!r}; this torchshrink reads "
            f"version {CODEC_VERSION} or older (upgrade torchshrink)"
        )
    coded = compression.get("tensors")
    if not isinstance(coded, dict) or not all(isinstance(m, dict) for m in coded.values()):
        raise ModelFileError(f"'{where}': the Huffman codec entry has no 'tensors' dict")
    blobs = _split_blob(compression, state, where=where) if version >= 2 else {}
    out = {k: v for k, v in state.items() if k != EXTRA_PREFIX + CODEC}
    for key, meta in coded.items():
        blob = blobs.get(key) if version >= 2 else state.get(EXTRA_PREFIX + extra_name(key))
        if blob is None:
            raise ModelFileError(f"'{where}': the coded tensor '{key}' is missing or malformed")
        try:
            out[key] = decode_tensor(meta, blob, version=version)
        except ModelFileError as exc:
            raise ModelFileError(f"'{where}': coded tensor '{key}': {exc}") from None
    return out


def _split_blob(
    compression: dict[str, Any], state: dict[str, torch.Tensor], *, where: str
) -> dict[str, torch.Tensor]:
    # Version 2: every coded tensor's bytes, in entry order, in the one blob EXTRA_PREFIX+CODEC.
    blob = state.get(EXTRA_PREFIX + CODEC)
    if blob is None or blob.dtype != torch.uint8 or blob.dim() != 1:
        raise ModelFileError(f"'{where}': the Huffman-coded file has no blob tensor")
    if zlib.crc32(blob.numpy().tobytes()) != compression.get("crc32"):
        raise ModelFileError(f"'{where}': checksum mismatch: the coded bytes are corrupt")
    out: dict[str, torch.Tensor] = {}
    at = 0
    for key, meta in compression["tensors"].items():
        sizes = meta.get("parts")
        if not isinstance(sizes, dict) or not all(
            isinstance(v, int) and v >= 0 for v in sizes.values()
        ):
            raise ModelFileError(f"'{where}': coded tensor '{key}' has malformed parts")
        n = sum(sizes.values())
        out[key] = blob[at : at + n]
        at += n
    if at != blob.numel():
        raise ModelFileError(
            f"'{where}': the entries total {at} bytes, the blob has {blob.numel()}"
        )
    return out


register_decoder(CODEC, decode_state)
