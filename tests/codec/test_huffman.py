"""Canonical Huffman: exact round trips, sizes, prefix property, entropy bound, corrupt input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchshrink.codec import huffman
from torchshrink.codec.huffman import (
    canonical_codes,
    code_lengths,
    coded_bits,
    decode,
    encode,
    kraft_sum,
)
from torchshrink.core.errors import ConfigError, ModelFileError


def _roundtrip(symbols: np.ndarray, alphabet: int, max_length: int = 24) -> tuple[int, int]:
    freqs = np.bincount(symbols, minlength=alphabet)
    lengths = code_lengths(freqs, max_length=max_length)
    data = encode(symbols, lengths)
    np.testing.assert_array_equal(decode(data, lengths, symbols.size), symbols)
    return data.size, coded_bits(freqs, lengths)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 300),  # alphabet size
    st.integers(0, 3000),  # number of symbols
    st.sampled_from(["uniform", "skewed"]),
    st.integers(0, 2**31 - 1),
)
def test_property_roundtrip_and_size(alphabet: int, n: int, kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        symbols = rng.integers(0, alphabet, n)
    else:  # geometric-like: a few symbols dominate
        symbols = np.minimum(rng.geometric(0.3, n) - 1, alphabet - 1)
    nbytes, bits = _roundtrip(symbols, alphabet)
    assert nbytes == (bits + 7) // 8  # size is the sum of code lengths rounded up to bytes


@pytest.mark.parametrize(("symbols", "expected_bytes"), [([], 0), ([7] * 17, 3), ([0], 1)])
def test_degenerate_inputs(symbols: list[int], expected_bytes: int) -> None:
    arr = np.array(symbols, dtype=np.int64)
    nbytes, bits = _roundtrip(arr, 8)
    assert nbytes == expected_bytes
    assert bits == len(symbols)  # a lone symbol gets a 1-bit code


def test_canonical_codes_are_prefix_free_with_kraft_at_most_one() -> None:
    rng = np.random.default_rng(1)
    freqs = rng.integers(0, 1000, 200) * (rng.random(200) < 0.7)
    lengths = code_lengths(freqs)
    codes = canonical_codes(lengths)
    assert kraft_sum(lengths) <= 1.0
    words = [format(int(c), f"0{int(ln)}b") for c, ln in zip(codes, lengths, strict=True) if ln]
    assert len(set(words)) == len(words) == int((freqs > 0).sum())
    for a in words:
        for b in words:
            assert a == b or not b.startswith(a)


def test_average_length_within_one_bit_of_entropy() -> None:
    p = 0.5 ** np.arange(1, 13)
    p = np.append(p, 1 - p.sum()) * 0.9 + 0.1 / 13  # skewed, every symbol used
    freqs = np.round(p * 100_000).astype(np.int64)
    lengths = code_lengths(freqs)
    q = freqs / freqs.sum()
    entropy = float(-(q * np.log2(q)).sum())
    avg = coded_bits(freqs, lengths) / freqs.sum()
    assert entropy <= avg < entropy + 1


def test_length_limit_is_respected_and_still_decodes() -> None:
    freqs = 2 ** np.arange(20)[::-1]  # an unlimited Huffman code would need 19 bits
    assert int(code_lengths(freqs).max()) == 19
    limited = code_lengths(freqs, max_length=8)
    assert int(limited.max()) <= 8 and kraft_sum(limited) <= 1.0
    symbols = np.repeat(np.arange(20), 3)
    np.testing.assert_array_equal(decode(encode(symbols, limited), limited, 60), symbols)
    with pytest.raises(ConfigError, match="cannot be coded with codes of at most 4 bits"):
        code_lengths(np.ones(17), max_length=4)


def test_windowed_decoding_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Long streams are decoded in windows; a tiny window exercises every boundary.
    monkeypatch.setattr(huffman, "_DECODE_WINDOW", 7)
    rng = np.random.default_rng(2)
    symbols = np.minimum(rng.geometric(0.2, 5000) - 1, 40)
    assert _roundtrip(symbols, 41)[0] > 0


def test_one_million_symbols_roundtrip() -> None:
    rng = np.random.default_rng(3)
    symbols = rng.choice(32, size=1_000_000, p=rng.dirichlet(np.ones(32)))
    nbytes, bits = _roundtrip(symbols, 32)
    assert nbytes == (bits + 7) // 8 and bits < 5 * 1_000_000


def test_corrupt_streams_raise_model_file_error() -> None:
    symbols = np.array([0, 1, 2, 3, 0, 0, 1] * 10)
    lengths = code_lengths(np.bincount(symbols))
    data = encode(symbols, lengths)
    with pytest.raises(ModelFileError, match="end"):
        decode(data[:-2], lengths, symbols.size)  # truncated
    with pytest.raises(ModelFileError, match="bytes, but"):
        decode(np.append(data, 0).astype(np.uint8), lengths, symbols.size)  # trailing bytes
    with pytest.raises(ModelFileError, match="Kraft sum"):
        decode(data, np.array([1, 1, 1]), symbols.size)  # not a prefix code
    with pytest.raises(ModelFileError, match="code lengths must be in"):
        decode(data, np.array([40, 1]), symbols.size)
    with pytest.raises(ModelFileError, match="invalid codeword"):
        decode(np.array([0xFF], dtype=np.uint8), np.array([1, 0]), 8)  # only "0" is a code
    with pytest.raises(ModelFileError, match="no symbol has a code"):
        decode(data, np.zeros(3), 1)


def test_encode_rejects_symbols_without_code() -> None:
    with pytest.raises(ConfigError, match="has no code"):
        encode(np.array([0, 2]), np.array([1, 1, 0]))
