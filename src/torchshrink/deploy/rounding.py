"""Channel rounding: keep channel counts at multiples the CPU kernels are fast at.

oneDNN's fp32 convolutions on AVX-512 work on blocks of 16 channels, so a convolution's latency
is close to a step function of ``ceil(C / 16)``. Measured on this machine (3x3 conv C -> C,
batch 64, 32x32, channels_last + frozen TorchScript, 2 threads; ``benchmarks/prune_speed.py``,
``channel_sweep``): 33 channels take ~25-30% longer than 32 for 6% more MACs, 49 ~25% longer
than 48, 65 ~20% longer than 64, while 8, 12, 15 and 16 channels all cost about the same.
So a pruned width just above a multiple of 16 wastes time, and one just below wastes accuracy:
round the number of channels kept to the nearest multiple.

Example:
    >>> round_keep(33, 16), round_keep(40, 16), round_keep(5, 16), round_keep(5, 16, total=12)
    (32, 48, 16, 12)
"""

from __future__ import annotations

from torchshrink.core.errors import ConfigError


def round_keep(n: int, multiple: int, *, total: int | None = None) -> int:
    """Round a number of channels to keep to the nearest multiple of ``multiple``.

    Ties round up (more channels kept, same kernel blocks). The result is at least
    ``multiple`` (a layer never disappears) and at most ``total`` when it is given (a layer
    narrower than ``multiple`` keeps all its channels).

    Args:
        n: channels the pruning criterion wants to keep (at least 1).
        multiple: the channel block to round to; 16 for fp32 on AVX-512 here, 1 for none.
        total: the layer's current number of channels, the upper bound.

    Returns:
        The number of channels to keep.

    Raises:
        ConfigError: ``n`` or ``multiple`` is below 1, or ``n`` is above ``total``.

    Example:
        >>> round_keep(24, 16), round_keep(23, 16), round_keep(7, 1)
        (32, 16, 7)
    """
    if n < 1:
        raise ConfigError(f"round_keep: 'n' must be at least 1 (keep a channel), got {n}")
    if multiple < 1:
        raise ConfigError(f"round_keep: 'multiple' must be at least 1, got {multiple}")
    if total is not None and n > total:
        raise ConfigError(f"round_keep: 'n' = {n} is more than the layer's total of {total}")
    rounded = max(multiple, ((2 * n + multiple) // (2 * multiple)) * multiple)
    return min(rounded, total) if total is not None else rounded
