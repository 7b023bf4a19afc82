"""Where the bytes of a Huffman-coded model file go: per tensor and per kind of data.

Read from the file itself (its safetensors header and the codec's JSON entries), so the numbers
describe exactly what is on disk.

Example:
    >>> report = inspect_compressed("/tmp/lenet300.ts")  # doctest: +SKIP
    >>> report.ratio  # dense fp32 bytes / file bytes  # doctest: +SKIP
    35.2
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchshrink.codec.packed import CODEC, extra_name
from torchshrink.core.errors import ModelFileError
from torchshrink.core.modelfile import DOC_TENSOR, EXTRA_PREFIX, read_header
from torchshrink.core.safeformat import read_file_header

_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


@dataclass(frozen=True)
class TensorCoding:
    """How one state-dict tensor is stored.

    Attributes:
        key: its state-dict key.
        mode: ``"dense"``, ``"sparse"``, ``"sparse_raw"`` (coded) or ``"plain"``.
        shape: its shape.
        nonzeros: non-zero elements (``-1`` when unknown, for plain tensors).
        clusters: codebook size (0 when there is none).
        index_bits: bits per relative index (0 when positions are not coded).
        stored_bytes: bytes it takes in the file (blob or plain tensor data).
    """

    key: str
    mode: str
    shape: tuple[int, ...]
    nonzeros: int
    clusters: int
    index_bits: int
    stored_bytes: int


@dataclass(frozen=True)
class CompressedReport:
    """Size breakdown of a compressed model file.

    Attributes:
        path: the file.
        file_bytes: its size.
        dense_bytes: fp32 bytes of every floating-point tensor of the model, uncompressed.
        index_bytes: Huffman-coded cluster indices.
        codebook_bytes: codebooks (raw values, the model's dtype).
        position_bytes: Huffman-coded relative positions.
        value_bytes: raw non-zero values of sparse tensors without a codebook.
        table_bytes: Huffman code-length tables.
        plain_bytes: tensors stored uncoded (biases, norms, ...: plain entries or ``raw``
            entries of the blob).
        header_bytes: safetensors header and JSON metadata (the rest of the file; for a
            compact file the deflated document tensor too).
        tensors: one row per state-dict tensor.
    """

    path: Path
    file_bytes: int
    dense_bytes: int
    index_bytes: int
    codebook_bytes: int
    position_bytes: int
    value_bytes: int
    table_bytes: int
    plain_bytes: int
    header_bytes: int
    tensors: tuple[TensorCoding, ...]

    @property
    def ratio(self) -> float:
        """``dense_bytes / file_bytes``: the compression ratio of Deep Compression's tables."""
        return self.dense_bytes / self.file_bytes if self.file_bytes else float("inf")

    def breakdown(self) -> dict[str, int]:
        """Bytes per kind; the values sum to ``file_bytes``."""
        return {
            "indices": self.index_bytes,
            "codebooks": self.codebook_bytes,
            "positions": self.position_bytes,
            "values": self.value_bytes,
            "tables": self.table_bytes,
            "plain": self.plain_bytes,
            "header": self.header_bytes,
        }


def inspect_compressed(path: str | Path) -> CompressedReport:
    """The size breakdown of a model file written by ``save_compressed``.

    Raises:
        ModelFileError: not a torchshrink model file, or not Huffman-coded.
    """
    path = Path(path)
    doc = read_header(path)
    compression = doc.get("compression") or {}
    if compression.get("codec") != CODEC or not isinstance(compression.get("tensors"), dict):
        raise ModelFileError(f"'{path}' is not a Huffman-coded model file")
    coded: dict[str, dict[str, Any]] = compression["tensors"]
    entries = {
        k: v for k, v in read_file_header(path).items() if k not in ("__metadata__", DOC_TENSOR)
    }
    blobs = {EXTRA_PREFIX + extra_name(k) for k in coded} | {EXTRA_PREFIX + CODEC}
    if compression.get("codec_version", 1) >= 2:  # coded tensors are not file entries
        entries.update({k: {"data_offsets": [0, 0], "dtype": "-", "shape": []} for k in coded})
    kinds = dict.fromkeys(("index", "codebook", "gaps", "values", "tables"), 0)
    rows: list[TensorCoding] = []
    dense = plain = 0
    for key, info in entries.items():
        start, stop = info["data_offsets"]
        if key in blobs:
            continue
        if key in coded:
            meta = coded[key]
            parts: dict[str, int] = meta["parts"]
            if meta["mode"] == "raw":
                plain += parts["values"]
                dense += 4 * math.prod(meta["shape"])
                rows.append(
                    TensorCoding(key, "raw", tuple(meta["shape"]), -1, 0, 0, parts["values"])
                )
                continue
            for name, n in parts.items():
                kind = "gaps" if name == "live" else name  # the live mask is position data
                kinds["tables" if name.endswith("_table") else kind] += n
            shape = tuple(meta["shape"])
            dense += 4 * math.prod(shape)
            stored = sum(parts.values())
            rows.append(
                TensorCoding(
                    key,
                    meta["mode"],
                    shape,
                    int(meta.get("nonzeros", -1)),
                    int(meta.get("clusters", 0)),
                    int(meta.get("index_bits", 0)),
                    stored,
                )
            )
            continue
        plain += stop - start
        shape = tuple(info["shape"])
        if info["dtype"] in _FLOAT_DTYPES and not key.startswith(EXTRA_PREFIX):
            dense += 4 * math.prod(shape)
        rows.append(TensorCoding(key, "plain", shape, -1, 0, 0, stop - start))
    file_bytes = path.stat().st_size
    data = plain + sum(kinds.values())
    return CompressedReport(
        path=path,
        file_bytes=file_bytes,
        dense_bytes=dense,
        index_bytes=kinds["index"],
        codebook_bytes=kinds["codebook"],
        position_bytes=kinds["gaps"],
        value_bytes=kinds["values"],
        table_bytes=kinds["tables"],
        plain_bytes=plain,
        header_bytes=file_bytes - data,
        tensors=tuple(rows),
    )
