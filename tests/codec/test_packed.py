"""Coding single tensors: mode choice, bit-exact round trips in every dtype, corrupt entries."""

from __future__ import annotations

import zlib

import pytest
import torch

from torchshrink.codec.packed import decode_tensor, encode_tensor
from torchshrink.core.errors import ModelFileError


def _sparse_clustered(shape: tuple[int, ...], density: float, k: int) -> torch.Tensor:
    codebook = torch.randn(k)
    w = codebook[torch.randint(0, k, shape)]
    return w * (torch.rand(shape) < density)


def _roundtrip(t: torch.Tensor, **kw: object) -> str:
    coded = encode_tensor(t, **kw)  # type: ignore[arg-type]
    assert coded is not None
    back = decode_tensor(coded.meta(), coded.blob)
    assert back.dtype == t.dtype and back.shape == t.shape
    assert torch.equal(back, t)
    assert coded.blob.numel() == sum(coded.parts.values())
    return coded.mode


def test_modes_follow_the_data() -> None:
    assert _roundtrip(_sparse_clustered((64, 300), 0.08, 32)) == "sparse"
    assert _roundtrip(_sparse_clustered((64, 300), 1.0, 16)) == "dense"
    assert _roundtrip(torch.randn(64, 300) * (torch.rand(64, 300) < 0.05)) == "sparse_raw"
    assert encode_tensor(torch.randn(64, 300)) is None  # incompressible: stays plain
    assert encode_tensor(torch.arange(2000)) is None  # integer tensors are not coded


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_bit_exact_in_every_float_dtype(dtype: torch.dtype) -> None:
    t = _sparse_clustered((40, 50, 3), 0.1, 64).to(dtype)
    assert _roundtrip(t) in ("sparse", "sparse_raw")


def test_sizes_and_counts() -> None:
    t = _sparse_clustered((300, 784), 0.08, 32)
    coded = encode_tensor(t, index_bits=4)
    assert coded is not None and coded.index_bits == 4
    assert coded.nonzeros == int((t != 0).sum())
    assert coded.entries == coded.nonzeros + coded.fillers
    assert coded.clusters == int(torch.unique(t[t != 0]).numel())
    assert coded.parts["codebook"] == 4 * coded.clusters
    # about 5 bits of index plus ~5 bits of position per non-zero, far below 32 bits
    assert 8 < 8 * coded.blob.numel() / coded.nonzeros < 12


def test_all_zero_and_negative_zero() -> None:
    z = torch.zeros(50, 40)
    assert _roundtrip(z) == "sparse"
    coded = encode_tensor(z)
    assert coded is not None and coded.blob.numel() <= 16
    t = _sparse_clustered((50, 40), 0.1, 4)
    t[0, 0] = -0.0
    assert _roundtrip(t) == "sparse"  # -0.0 decodes as 0.0, which torch.equal accepts


def _entry() -> tuple[dict[str, object], torch.Tensor]:
    coded = encode_tensor(_sparse_clustered((100, 100), 0.1, 8))
    assert coded is not None
    return coded.meta(), coded.blob.clone()


def _with_crc(meta: dict[str, object], blob: torch.Tensor) -> dict[str, object]:
    return {**meta, "crc32": zlib.crc32(blob.numpy().tobytes())}


def test_corrupt_entries_raise() -> None:
    meta, blob = _entry()
    flipped = blob.clone()
    flipped[-1] ^= 1
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        decode_tensor(meta, flipped)
    with pytest.raises(ModelFileError, match="unknown coding mode"):
        decode_tensor({**meta, "mode": "lzma"}, blob)
    with pytest.raises(ModelFileError, match="parts total"):
        decode_tensor(meta, blob[:-1])
    with pytest.raises(ModelFileError, match="field 'entries'"):
        decode_tensor({**meta, "entries": 10**6}, blob)
    with pytest.raises(ModelFileError, match="more than"):
        decode_tensor({**meta, "shape": [2**20, 2**20]}, blob)


def test_truncated_stream_and_bad_table_raise() -> None:
    meta, blob = _entry()
    parts = dict(meta["parts"])  # type: ignore[call-overload]
    # drop the last byte of the position stream (metadata and checksum kept consistent)
    short = blob[:-1]
    parts_short = {**parts, "gaps": parts["gaps"] - 1}
    with pytest.raises(ModelFileError, match="Huffman stream"):
        decode_tensor(_with_crc({**meta, "parts": parts_short}, short), short)
    # a code-length table that is no prefix code
    bad = blob.clone()
    start = parts["codebook"]
    bad[start : start + parts["index_table"]] = 1
    with pytest.raises(ModelFileError, match="Kraft sum"):
        decode_tensor(_with_crc(meta, bad), bad)
