"""Sub-byte packing of integer codes: int4 nibbles and a generic 1..8-bit bit stream.

Codes are stored as their low ``bits`` (two's complement for negative codes), least significant
bit first, so ``n`` codes of ``b`` bits take exactly ``ceil(n * b / 8)`` bytes.

Example:
    >>> import torch
    >>> q = torch.tensor([-8, 7, 3], dtype=torch.int8)
    >>> packed = pack_int4(q)
    >>> packed.numel()
    2
    >>> unpack_int4(packed, 3).tolist()
    [-8, 7, 3]
"""

from __future__ import annotations

import math

import torch

from torchshrink.core.errors import ConfigError


def _check_codes(q: torch.Tensor, bits: int) -> None:
    if not 1 <= bits <= 8:
        raise ConfigError(f"bits must be 1..8 for packing, got {bits}")
    if q.is_floating_point() or q.is_complex():
        raise ConfigError(f"packing needs integer codes, got dtype {q.dtype}")
    if q.numel() == 0:
        return
    lo, hi = int(q.min()), int(q.max())
    # Either the signed or the unsigned range of `bits`, never a mix wider than `bits`.
    if lo < 0:
        ok = lo >= -(2 ** (bits - 1)) and hi <= 2 ** (bits - 1) - 1
    else:
        ok = hi <= 2**bits - 1
    if not ok:
        raise ConfigError(f"codes in [{lo}, {hi}] do not fit in {bits} bits")


def pack_bits(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes into a flat uint8 stream of ``ceil(q.numel() * bits / 8)`` bytes.

    Args:
        q: integer codes in the signed or the unsigned range of ``bits``.
        bits: 1..8.

    Raises:
        ConfigError: bits out of range, float input, or codes that do not fit.

    Example:
        >>> pack_bits(torch.tensor([1, 0, 1, 1]), 1).tolist()
        [13]
    """
    _check_codes(q, bits)
    flat = q.reshape(-1).to(torch.int64) & ((1 << bits) - 1)  # (N,) low bits
    shifts = torch.arange(bits, dtype=torch.int64)
    bitmat = ((flat[:, None] >> shifts) & 1).reshape(-1)  # (N * bits,) LSB first
    pad = (-bitmat.numel()) % 8
    bitmat = torch.cat([bitmat, bitmat.new_zeros(pad)]).reshape(-1, 8)  # (bytes, 8)
    weights = 1 << torch.arange(8, dtype=torch.int64)
    return (bitmat * weights).sum(dim=1).to(torch.uint8)


def unpack_bits(
    packed: torch.Tensor,
    bits: int,
    shape: int | tuple[int, ...] | torch.Size,
    *,
    signed: bool = False,
) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: codes of ``shape`` (int8 if signed, else uint8 / int16).

    Args:
        packed: uint8 stream from :func:`pack_bits`.
        bits: 1..8, as packed.
        shape: number of codes or the shape to restore.
        signed: read codes as two's complement (sign-extend).

    Raises:
        ConfigError: the stream is too short for ``shape``.

    Example:
        >>> unpack_bits(torch.tensor([13], dtype=torch.uint8), 1, 4).tolist()
        [1, 0, 1, 1]
    """
    if not 1 <= bits <= 8:
        raise ConfigError(f"bits must be 1..8 for unpacking, got {bits}")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    n = math.prod(shape)
    need = math.ceil(n * bits / 8)
    if packed.numel() < need:
        raise ConfigError(
            f"packed stream has {packed.numel()} bytes, {need} needed for {n} {bits}-bit codes"
        )
    by = packed.reshape(-1)[:need].to(torch.int64)
    bitmat = (by[:, None] >> torch.arange(8, dtype=torch.int64)) & 1  # (bytes, 8)
    bitmat = bitmat.reshape(-1)[: n * bits].reshape(n, bits)  # (N, bits)
    vals = (bitmat << torch.arange(bits, dtype=torch.int64)).sum(dim=1)  # (N,)
    if signed:
        vals = torch.where(vals >= 2 ** (bits - 1), vals - 2**bits, vals)
        return vals.to(torch.int8).reshape(shape)
    return vals.to(torch.uint8).reshape(shape)


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes two per byte (first code in the low nibble): ``ceil(n / 2)`` bytes.

    Example:
        >>> pack_int4(torch.tensor([1, 2])).tolist()
        [33]
    """
    _check_codes(q, 4)
    flat = q.reshape(-1).to(torch.int64) & 0xF  # (N,)
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    pairs = flat.reshape(-1, 2)  # (ceil(N/2), 2)
    return (pairs[:, 0] | (pairs[:, 1] << 4)).to(torch.uint8)


def unpack_int4(
    packed: torch.Tensor, shape: int | tuple[int, ...] | torch.Size, *, signed: bool = True
) -> torch.Tensor:
    """Inverse of :func:`pack_int4`; ``signed`` sign-extends each nibble.

    Example:
        >>> unpack_int4(torch.tensor([33], dtype=torch.uint8), 2).tolist()
        [1, 2]
    """
    return unpack_bits(packed, 4, shape, signed=signed)
