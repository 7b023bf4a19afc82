"""Relative indices with filler entries: exact round trips, filler counts, width choice."""

from __future__ import annotations

import numpy as np
import pytest

from torchshrink.codec.huffman import code_lengths, coded_bits
from torchshrink.codec.sparse import (
    absolute_positions,
    choose_index_bits,
    gap_histogram,
    relative_indices,
    zero_gaps,
)
from torchshrink.core.errors import ConfigError, ModelFileError


@pytest.mark.parametrize("density", [0.05, 0.5, 1.0])
@pytest.mark.parametrize("bits", [1, 3, 4, 8])
def test_roundtrip_random_masks(density: float, bits: int) -> None:
    rng = np.random.default_rng(int(density * 100) + bits)
    numel = 20_000
    positions = np.flatnonzero(rng.random(numel) < density)
    gaps, filler = relative_indices(positions, index_bits=bits)
    assert gaps.max(initial=0) <= (1 << bits) - 1
    decoded = absolute_positions(gaps, numel=numel)
    np.testing.assert_array_equal(decoded[~filler], positions)
    # fillers sit on zeros, never on a stored non-zero
    assert not np.isin(decoded[filler], positions).any()
    assert filler.sum() == (zero_gaps(positions) // (1 << bits)).sum()


def test_gaps_beyond_the_index_range_insert_fillers() -> None:
    positions = np.array([0, 100, 101, 1000])
    gaps, filler = relative_indices(positions, index_bits=3)  # gaps up to 7
    # gaps of 99 and 898 zeros: 99 // 8 = 12 and 898 // 8 = 112 fillers
    assert int(filler.sum()) == 124
    assert gaps[filler].tolist() == [7] * 124  # fillers carry the largest gap
    np.testing.assert_array_equal(absolute_positions(gaps)[~filler], positions)


def test_leading_gap_and_empty() -> None:
    gaps, filler = relative_indices(np.array([20]), index_bits=2)
    assert gaps.tolist() == [3, 3, 3, 3, 3, 0] and filler.sum() == 5
    assert absolute_positions(gaps)[-1] == 20
    gaps, filler = relative_indices(np.array([], dtype=np.int64), index_bits=4)
    assert gaps.size == filler.size == 0


def test_choose_index_bits_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    positions = np.flatnonzero(rng.random(50_000) < 0.08)
    raw = zero_gaps(positions)

    def cost(hist: np.ndarray, fillers: int) -> float:
        # coded gaps plus one 5-bit cluster index per entry (fillers too)
        return coded_bits(hist, code_lengths(hist)) + 5 * (positions.size + fillers)

    best = choose_index_bits(raw, cost)
    costs = {b: cost(*gap_histogram(raw, index_bits=b)) for b in range(1, 13)}
    assert costs[best] == min(costs.values())
    assert 3 <= best <= 8  # geometric gaps with mean ~12: neither extreme wins


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError, match=r"index_bits must be in 1\.\.16"):
        relative_indices(np.array([1]), index_bits=0)
    with pytest.raises(ConfigError, match="sorted, distinct"):
        relative_indices(np.array([3, 3]), index_bits=4)
    with pytest.raises(ModelFileError, match="past the tensor's end"):
        absolute_positions(np.array([5, 5]), numel=10)
    with pytest.raises(ModelFileError, match="negative gap"):
        absolute_positions(np.array([-2]))
