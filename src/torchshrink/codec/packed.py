"""Code one tensor as Huffman-coded cluster indices, codebook and relative positions, and back.

A tensor with few distinct values (weight sharing) and/or many zeros (pruning) is stored as one
uint8 *blob* of concatenated parts, in one of three modes:

- ``dense``: codebook (the distinct non-zero values, raw bytes in the tensor's dtype) + the
  Huffman-coded index of every element (symbol 0 = zero, ``s >= 1`` = ``codebook[s - 1]``);
- ``sparse``: codebook + Huffman-coded indices of the non-zeros and fillers + Huffman-coded
  relative positions (:mod:`.sparse`, fillers carry symbol 0, the zero codeword);
- ``sparse_raw``: raw values of the non-zeros (and zero for fillers) + coded positions, for
  sparse tensors with too many distinct values for a codebook.

Each Huffman stream is preceded by its table: one uint8 code length per symbol, trimmed after
the last used one. The mode with the fewest bytes wins; a tensor stays a plain tensor when no
mode beats its raw bytes. Values are copied bit for bit, so decoding is exact.

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

from torchshrink.codec import huffman, sparse
from torchshrink.core.errors import ModelFileError
from torchshrink.core.filehooks import register_decoder
from torchshrink.core.modelfile import EXTRA_PREFIX

CODEC = "huffman"
CODEC_VERSION = 1
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
}
OVERHEAD = 320  # approx. bytes of JSON and safetensors header a coded tensor adds
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

    def meta(self) -> dict[str, Any]:
        """The JSON entry stored in the file's ``compression`` dict."""
        return {
            "mode": self.mode,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "clusters": self.clusters,
            "nonzeros": self.nonzeros,
            "entries": self.entries,
            "index_bits": self.index_bits,
            "parts": dict(self.parts),
            "crc32": zlib.crc32(self.blob.numpy().tobytes()),
        }


def _raw_bytes(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy()


def _table(lengths: np.ndarray) -> np.ndarray:
    used = np.flatnonzero(lengths)
    return lengths[: int(used[-1]) + 1] if used.size else lengths[:0]


def _coded_size(hist: np.ndarray, max_len: int) -> tuple[int, np.ndarray]:
    """Bytes of the table plus stream for symbol counts ``hist``, and the code lengths."""
    lengths = huffman.code_lengths(hist, max_length=max_len)
    return _table(lengths).size + (huffman.coded_bits(hist, lengths) + 7) // 8, lengths


def encode_tensor(
    t: torch.Tensor,
    *,
    index_bits: int | None = None,
    max_codebook: int = 4096,
    max_code_length: int = huffman.MAX_LENGTH,
) -> CodedTensor | None:
    """Code ``t`` in its smallest mode, or ``None`` if it is better stored plain.

    Args:
        t: a floating-point tensor (float32 / float16 / bfloat16 / float64), all finite.
        index_bits: bits per relative index for the sparse modes; ``None`` picks the width
            with the smallest coded size.
        max_codebook: most distinct non-zero values coded with a codebook.
        max_code_length: Huffman code length limit in bits.

    Example:
        >>> encode_tensor(torch.randn(100)) is None  # 100 distinct values: plain is smaller
        True
    """
    dtype = str(t.dtype).removeprefix("torch.")
    flat = t.detach().cpu().reshape(-1)
    if dtype not in DTYPES or flat.numel() == 0 or not bool(torch.isfinite(flat).all()):
        return None
    numel, isz = flat.numel(), flat.element_size()
    positions = torch.nonzero(flat).reshape(-1).numpy()  # (nnz,) sorted flat indices
    values = flat[torch.from_numpy(positions)]  # (nnz,)
    codebook, inverse = torch.unique(values, return_inverse=True)  # sorted distinct non-zeros
    raw_gaps = sparse.zero_gaps(positions)
    L = max_code_length

    def gap_cost(hist: np.ndarray, fillers: int, clustered: bool) -> float:
        size = _coded_size(hist, L)[0]
        if clustered:
            idx = counts.copy()
            idx[0] += fillers
            return size + _coded_size(idx, L)[0] + codebook.numel() * isz
        return size + (positions.size + fillers) * isz

    options: list[tuple[float, str, int]] = []  # (bytes, mode, index_bits)
    clustered = codebook.numel() <= max_codebook
    counts = np.bincount(inverse.numpy() + 1, minlength=codebook.numel() + 1)
    if clustered:
        dense_hist = counts.copy()
        dense_hist[0] = numel - positions.size
        options.append((_coded_size(dense_hist, L)[0] + codebook.numel() * isz, "dense", 0))
    for mode in ("sparse", "sparse_raw") if clustered else ("sparse_raw",):

        def cost(hist: np.ndarray, fillers: int, _c: bool = mode == "sparse") -> float:
            return gap_cost(hist, fillers, _c)

        bits = index_bits if index_bits is not None else sparse.choose_index_bits(raw_gaps, cost)
        options.append((cost(*sparse.gap_histogram(raw_gaps, index_bits=bits)), mode, bits))
    size, mode, bits = min(options)
    if size + OVERHEAD >= numel * isz:
        return None
    return _build(mode, bits, t, positions, values, codebook, inverse, L)


def _build(
    mode: str,
    bits: int,
    t: torch.Tensor,
    positions: np.ndarray,
    values: torch.Tensor,
    codebook: torch.Tensor,
    inverse: torch.Tensor,
    max_len: int,
) -> CodedTensor:
    parts: dict[str, np.ndarray] = {}
    nnz, numel = positions.size, t.numel()
    symbols = inverse.numpy().astype(np.int64) + 1  # (nnz,) 0 is the zero codeword
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
        parts["index_table"] = _table(lengths)
        parts["index"] = huffman.encode(entries, lengths)
    if mode != "dense":
        lengths = huffman.code_lengths(np.bincount(gaps, minlength=1), max_length=max_len)
        parts["gap_table"] = _table(lengths)
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
    )


def _int(meta: dict[str, Any], field: str, lo: int, hi: int) -> int:
    value = meta.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ModelFileError(f"field '{field}' must be an integer in {lo}..{hi}, got {value!r}")
    return value


def decode_tensor(meta: dict[str, Any], blob: torch.Tensor) -> torch.Tensor:
    """Rebuild the tensor that :func:`encode_tensor` coded (bit-exact values).

    Raises:
        ModelFileError: a malformed entry, a checksum mismatch or corrupt coded streams.
    """
    mode, dtype = meta.get("mode"), meta.get("dtype")
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
    if data is None or not isinstance(sizes, dict) or tuple(sizes) != PARTS[mode]:
        raise ModelFileError(f"the parts of a '{mode}' tensor must be {PARTS[mode]}")
    n = {k: _int(sizes, k, 0, data.size) for k in sizes}
    if sum(n.values()) != data.size:
        raise ModelFileError(f"parts total {sum(n.values())} bytes, the blob has {data.size}")
    if zlib.crc32(data.tobytes()) != meta.get("crc32"):
        raise ModelFileError("checksum mismatch: the coded bytes are corrupt")
    at = np.cumsum([0, *n.values()])
    part = {k: data[at[i] : at[i + 1]] for i, k in enumerate(n)}
    torch_dtype = DTYPES[dtype]
    isz = torch.empty(0, dtype=torch_dtype).element_size()
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
        symbols = huffman.decode(part["index"], part["index_table"], entries)
        if symbols.size and int(symbols.max()) > k:
            raise ModelFileError(f"cluster index {int(symbols.max())} beyond {k} clusters")
        vals = table[torch.from_numpy(symbols)]
    if mode == "dense":
        return vals.reshape(shape)
    bits = _int(meta, "index_bits", 1, sparse.MAX_INDEX_BITS)
    gaps = huffman.decode(part["gaps"], part["gap_table"], entries)
    if gaps.size and int(gaps.max()) >= 1 << bits:
        raise ModelFileError(f"relative index {int(gaps.max())} needs more than {bits} bits")
    out = torch.zeros(numel, dtype=torch_dtype)
    out[torch.from_numpy(sparse.absolute_positions(gaps, numel=numel))] = vals
    return out.reshape(shape)


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
    if not isinstance(coded, dict):
        raise ModelFileError(f"'{where}': the Huffman codec entry has no 'tensors' dict")
    out = dict(state)
    for key, meta in coded.items():
        blob = state.get(EXTRA_PREFIX + extra_name(key))
        if blob is None or not isinstance(meta, dict):
            raise ModelFileError(f"'{where}': the coded tensor '{key}' is missing or malformed")
        try:
            out[key] = decode_tensor(meta, blob)
        except ModelFileError as exc:
            raise ModelFileError(f"'{where}': coded tensor '{key}': {exc}") from None
    return out


register_decoder(CODEC, decode_state)
