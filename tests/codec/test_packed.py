"""Coding single tensors: mode choice, bit-exact round trips in every dtype, corrupt entries."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchshrink.codec import huffman
from torchshrink.codec.packed import decode_tensor, encode_tensor, raw_tensor
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
    assert _roundtrip(z) in ("sparse", "sparse_raw")  # a tie but for the index table
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
        decode_tensor(_with_crc(meta, blob), flipped)  # an entry with a CRC checks it
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
    bad[start : start + parts["index_table"]] = 0  # zero symbols: a malformed packed table
    with pytest.raises(ModelFileError, match="bad Huffman code table"):
        decode_tensor(meta, bad)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    density=st.sampled_from([0.0, 0.01, 0.1, 0.5, 0.9, 1.0]),
    k=st.integers(1, 40),
    index_bits=st.one_of(st.none(), st.integers(1, 9)),
    seed=st.integers(0, 2**16),
)
def test_random_masks_round_trip(
    shape: list[int], density: float, k: int, index_bits: int | None, seed: int
) -> None:
    torch.manual_seed(seed)
    t = _sparse_clustered(tuple(shape), density, k)
    coded = encode_tensor(t, index_bits=index_bits)
    if coded is None:  # too small to gain: kept raw, which is exact by construction
        coded = raw_tensor(t)
    back = decode_tensor(coded.meta(), coded.blob)
    assert back.shape == t.shape and torch.equal(back, t)
    assert coded.blob.numel() == sum(coded.parts.values())


def test_edge_cases_empty_dense_and_one_nonzero() -> None:
    empty = torch.zeros(300, 784)  # a layer pruned away entirely
    coded = encode_tensor(empty)
    assert coded is not None and coded.nonzeros == 0 and coded.blob.numel() <= 16
    assert torch.equal(decode_tensor(coded.meta(), coded.blob), empty)
    full = _sparse_clustered((100, 100), 1.0, 16)  # no zero at all
    assert _roundtrip(full) == "dense"
    one = torch.zeros(300, 784)
    one[299, 783] = 0.25  # one non-zero, in the very last position
    coded = encode_tensor(one)
    # 235,199 leading zeros cost 57 fillers of the widest searched index (12 bits)
    assert coded is not None and coded.nonzeros == 1 and coded.blob.numel() <= 128
    assert torch.equal(decode_tensor(coded.meta(), coded.blob), one)
    first = torch.zeros(7, 5)
    first[0, 0] = -3.0
    assert _roundtrip(first) in ("sparse", "sparse_raw", "dense")


def test_column_structure_is_scanned_transposed() -> None:
    # Every row and column holds a non-zero, in vertical runs of 20: column-major gaps are short.
    torch.manual_seed(0)
    t = torch.zeros(300, 784)
    for j, r in enumerate(torch.randint(0, 280, (784,)).tolist()):
        t[r : r + 20, j] = torch.randn(8)[torch.randint(0, 8, (20,))]
    coded = encode_tensor(t)
    assert coded is not None and coded.transposed and coded.meta()["transposed"] is True
    assert torch.equal(decode_tensor(coded.meta(), coded.blob), t)
    rows = encode_tensor(t.T.contiguous())  # the same mask with rows kept: row-major is best
    assert rows is not None and not rows.transposed
    assert abs(rows.blob.numel() - coded.blob.numel()) <= 8


def test_dead_rows_and_columns_are_left_out_of_the_positions() -> None:
    # Pruning that kills whole input columns (dead pixels) and output rows (dead neurons):
    # positions count only within the live rows x columns, after a bit mask of them.
    torch.manual_seed(0)
    t = _sparse_clustered((300, 784), 0.5, 16) * (torch.rand(784) < 0.05)
    t[torch.rand(300) < 0.3] = 0.0
    coded = encode_tensor(t)
    assert coded is not None and coded.live and coded.meta()["live"] is True
    assert coded.parts["live"] == (300 + 784 + 7) // 8
    assert next(iter(coded.parts)) == "live"
    assert torch.equal(decode_tensor(coded.meta(), coded.blob), t)
    # The position code is near the entropy of an i.i.d. mask of the live block, far below that
    # of the whole matrix (what a scan of all positions at best achieves on this mask).
    nz = t != 0
    block = int(nz.any(1).sum()) * int(nz.any(0).sum())

    def mask_entropy_bits(n: int) -> float:
        q = coded.nonzeros / n
        return n * (-q * math.log2(q) - (1 - q) * math.log2(1 - q))

    assert coded.parts["gaps"] * 8 < 1.1 * mask_entropy_bits(block) + 64
    assert coded.parts["gaps"] * 8 < 0.4 * mask_entropy_bits(t.numel())
    flipped = encode_tensor(t.T.contiguous())
    assert flipped is not None and flipped.live
    assert torch.equal(decode_tensor(flipped.meta(), flipped.blob), t.T)


@pytest.mark.parametrize("clusters", [16, 5000])  # codebook ("sparse") or raw values
def test_live_positions_round_trip_conv_weights(clusters: int) -> None:
    torch.manual_seed(1)
    w = (
        _sparse_clustered((50, 20, 5, 5), 0.3, clusters)
        if clusters < 100
        else torch.randn(50, 20, 5, 5) * (torch.rand(50, 20, 5, 5) < 0.3)
    )
    w[::3] = 0.0  # dead output channels
    w[:, :, :, 4] = 0.0  # a dead kernel column in every filter
    coded = encode_tensor(w)
    assert coded is not None and coded.live
    assert coded.mode == ("sparse" if clusters < 100 else "sparse_raw")
    assert torch.equal(decode_tensor(coded.meta(), coded.blob), w)


def test_live_entries_need_version_3_and_a_matching_mask() -> None:
    torch.manual_seed(0)
    t = _sparse_clustered((64, 100), 0.5, 8) * (torch.rand(100) < 0.2)
    coded = encode_tensor(t)
    assert coded is not None and coded.live
    with pytest.raises(ModelFileError, match="version 3"):
        decode_tensor(coded.meta(), coded.blob, version=2)
    meta = coded.meta()
    meta["parts"] = {
        "live": meta["parts"]["live"] - 1,
        **{k: v for k, v in meta["parts"].items() if k != "live"},
    }
    blob = torch.cat([coded.blob[:0], coded.blob[1:]])  # one mask byte short
    with pytest.raises(ModelFileError, match="live-mask bytes"):
        decode_tensor(meta, blob)


def test_rice_code_is_chosen_for_random_masks_without_a_table() -> None:
    torch.manual_seed(3)
    t = _sparse_clustered((1000, 1000), 0.01, 4)  # i.i.d. mask: geometric gaps
    coded = encode_tensor(t)
    assert coded is not None and coded.rice >= 0 and coded.parts["gap_table"] == 0
    assert coded.meta()["rice"] == coded.rice
    assert torch.equal(decode_tensor(coded.meta(), coded.blob), t)
    p = 0.01
    entropy_bytes = 1e6 * (-p * math.log2(p) - (1 - p) * math.log2(1 - p)) / 8
    assert coded.parts["gaps"] < 1.03 * entropy_bytes


def test_version_1_entries_use_byte_tables() -> None:
    lengths = np.array([1, 2, 2], dtype=np.uint8)  # version 1 table: one byte per symbol
    codebook = torch.tensor([0.5, -1.0]).view(torch.uint8).numpy()
    sym = np.array([0, 1, 2, 1, 0, 0])
    index = huffman.encode(sym, lengths)
    blob = torch.from_numpy(np.concatenate([codebook, lengths, index]))
    meta = {
        "mode": "dense",
        "shape": [2, 3],
        "dtype": "float32",
        "clusters": 2,
        "entries": 6,
        "index_bits": 0,
        "parts": {"codebook": 8, "index_table": 3, "index": int(index.size)},
    }
    out = decode_tensor(_with_crc(meta, blob), blob, version=1)
    assert out.tolist() == [[0.0, 0.5, -1.0], [0.5, 0.0, 0.0]]
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        decode_tensor(meta, blob, version=1)  # version 1 entries must carry their CRC
