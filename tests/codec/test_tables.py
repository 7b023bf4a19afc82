"""Packed code-length tables and Rice codes: round trips, sizes, malformed tables."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchshrink.codec import huffman
from torchshrink.codec.tables import (
    best_rice,
    pack_lengths,
    packed_size,
    rice_ks,
    rice_lengths,
    unpack_lengths,
)
from torchshrink.core.errors import ModelFileError


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 32), min_size=0, max_size=700))
def test_pack_round_trip(lengths: list[int]) -> None:
    ls = np.array(lengths, dtype=np.int64)
    packed = pack_lengths(ls)
    used = np.flatnonzero(ls)
    trimmed = ls[: int(used[-1]) + 1] if used.size else ls[:0]
    assert unpack_lengths(packed).tolist() == trimmed.tolist()
    assert packed.size == packed_size(ls)


def test_packed_table_is_smaller_than_one_byte_per_symbol() -> None:
    gaps = np.random.default_rng(0).geometric(0.05, size=20_000) - 1
    lengths = huffman.code_lengths(np.bincount(np.minimum(gaps, 511), minlength=512))
    packed = pack_lengths(lengths)
    assert packed.size <= 3 + (512 * 5 + 7) // 8  # 5-bit lengths, 3 header bytes
    assert packed.size < 0.65 * 512


def test_malformed_tables_raise() -> None:
    good = pack_lengths(np.array([1, 2, 2]))
    with pytest.raises(ModelFileError, match="need 3 bytes, got 2"):
        unpack_lengths(good[:-1])
    with pytest.raises(ModelFileError, match="malformed symbol count"):
        unpack_lengths(np.array([0xFF, 0xFF, 0xFF, 0xFF, 0xFF], dtype=np.uint8))
    with pytest.raises(ModelFileError, match="lengths of 9 bits"):
        unpack_lengths(np.array([1, 9, 0, 0], dtype=np.uint8))


def test_rice_code_is_a_prefix_code_that_decodes() -> None:
    for alphabet in (1, 8, 512):
        for k in rice_ks(alphabet):
            lengths = rice_lengths(alphabet, k=k)
            assert lengths.max() <= huffman.HARD_MAX_LENGTH
            assert huffman.kraft_sum(lengths) <= 1.0
    assert rice_ks(512)[0] == 5  # k < 5 would need codes longer than 32 bits
    sym = np.random.default_rng(1).geometric(0.2, size=5000) - 1
    sym = np.minimum(sym, 63)
    lengths = rice_lengths(64, k=2)
    data = huffman.encode(sym, lengths)
    assert np.array_equal(huffman.decode(data, lengths, sym.size), sym)
    assert 8 * data.size == pytest.approx(int(lengths[sym].sum()), abs=7)


def test_best_rice_is_near_the_entropy_of_geometric_gaps() -> None:
    p = 0.05
    gaps = np.minimum(np.random.default_rng(2).geometric(p, size=50_000) - 1, 255)
    hist = np.bincount(gaps, minlength=256)
    found = best_rice(hist)
    assert found is not None
    k, bits = found
    entropy = (-(1 - p) * np.log2(1 - p) - p * np.log2(p)) / p  # bits per geometric symbol
    assert k == 4
    assert bits / gaps.size < entropy + 0.1
    assert best_rice(np.ones(1024)) == (8, 1024 * 10.5)  # uniform: k 8 and 9 tie at 10.5 bits
