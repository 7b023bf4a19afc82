"""Sub-byte packing: exact round trips for 1..8 bits and the byte counts."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchshrink.core.errors import ConfigError
from torchshrink.quantize import pack_bits, pack_int4, unpack_bits, unpack_int4


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.booleans(), st.data())
def test_pack_bits_round_trip_every_width(bits: int, signed: bool, data) -> None:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    vals = data.draw(st.lists(st.integers(lo, hi), min_size=0, max_size=200))
    q = torch.tensor(vals, dtype=torch.int64)
    packed = pack_bits(q, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(len(vals) * bits / 8)
    back = unpack_bits(packed, bits, len(vals), signed=signed)
    assert back.tolist() == vals


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1001])
def test_int4_takes_ceil_half_bytes_and_round_trips(n: int) -> None:
    q = torch.randint(-8, 8, (n,), dtype=torch.int8)
    packed = pack_int4(q)
    assert packed.numel() == math.ceil(n / 2)
    assert torch.equal(unpack_int4(packed, n), q)
    u = torch.randint(0, 16, (n,), dtype=torch.uint8)
    assert torch.equal(unpack_int4(pack_int4(u), n, signed=False), u)


def test_shape_restored_and_byte_layout() -> None:
    q = torch.arange(-8, 8, dtype=torch.int8).reshape(4, 4)
    assert unpack_int4(pack_int4(q), (4, 4)).shape == (4, 4)
    assert pack_int4(torch.tensor([0x3, 0xA])).tolist() == [0xA3]  # first code in low nibble
    assert pack_bits(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1]), 1).tolist() == [0x81, 0x01]


def test_packing_errors() -> None:
    with pytest.raises(ConfigError, match=r"codes in \[0, 16\] do not fit in 4 bits"):
        pack_int4(torch.tensor([0, 16]))
    with pytest.raises(ConfigError, match=r"codes in \[-9, 0\] do not fit in 4 bits"):
        pack_bits(torch.tensor([-9, 0]), 4)
    with pytest.raises(ConfigError, match=r"bits must be 1\.\.8"):
        pack_bits(torch.tensor([0]), 9)
    with pytest.raises(ConfigError, match="integer codes"):
        pack_bits(torch.tensor([0.5]), 4)
    with pytest.raises(ConfigError, match="2 bytes, 3 needed"):
        unpack_bits(torch.zeros(2, dtype=torch.uint8), 3, 8)
