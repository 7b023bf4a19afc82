"""QuantSpec: how one tensor is quantized (bits, sign, symmetry, granularity, rounding).

Example:
    >>> spec = QuantSpec(bits=4, granularity="per_group", group_size=128)
    >>> spec.qmin, spec.qmax
    (-8, 7)
    >>> QuantSpec.preset("uint8").symmetric
    False
"""

from __future__ import annotations

import re
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from torchshrink.core.errors import ConfigError

Granularity = Literal["per_tensor", "per_channel", "per_group"]
Rounding = Literal["nearest", "stochastic", "floor"]

# Named presets; names of the form [u]int<bits>[c|g<size>] are parsed as well (see `preset`).
_PRESETS: dict[str, dict[str, Any]] = {
    "int8": {"bits": 8},
    "int8c": {"bits": 8, "granularity": "per_channel"},
    "uint8": {"bits": 8, "signed": False, "symmetric": False},
    "int16": {"bits": 16},
    "int4": {"bits": 4, "granularity": "per_channel"},
    "int4g128": {"bits": 4, "granularity": "per_group", "group_size": 128},
    "int4g32": {"bits": 4, "granularity": "per_group", "group_size": 32},
    "int2": {"bits": 2, "granularity": "per_channel"},
}
_PATTERN = re.compile(r"^(u?)int(\d+)(c|g(\d+))?$")


class QuantSpec(BaseModel):
    """How to quantize one tensor (a weight or an activation).

    Scales and zero points have a compact shape set by ``granularity``: ``()`` per tensor,
    ``(C,)`` per channel (``C = x.shape[axis]``) and ``(C, G)`` per group, where the tensor is
    viewed as ``(C, K)`` (``axis`` first, every other dimension flattened, so ``in * kh * kw``
    for a conv weight) and ``K`` is cut into ``G = K / group_size`` contiguous groups.

    Attributes:
        bits: 2-8 or 16.
        signed: integer codes in ``[-2^(b-1), 2^(b-1) - 1]``; unsigned codes in ``[0, 2^b - 1]``.
        symmetric: range ``[-a, a]`` with a fixed zero point (0 when signed, ``2^(b-1)`` when
            unsigned, as PyTorch does); asymmetric fits ``[min, max]`` with a free zero point.
        granularity: ``"per_tensor"``, ``"per_channel"`` or ``"per_group"``.
        axis: the channel axis for per-channel and per-group (0 for weights, 1 for NCHW
            activations); negative values count from the end.
        group_size: elements per group along the flattened input dimension (per-group only).
        rounding: ``"nearest"`` (half to even), ``"stochastic"`` (unbiased) or ``"floor"``.

    Example:
        >>> QuantSpec(bits=8, granularity="per_channel").qmax
        127
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bits: int = 8
    signed: bool = True
    symmetric: bool = True
    granularity: Granularity = "per_tensor"
    axis: int = 0
    group_size: int | None = Field(default=None, ge=1)
    rounding: Rounding = "nearest"

    @field_validator("bits")
    @classmethod
    def _check_bits(cls, v: int) -> int:
        if not (2 <= v <= 8 or v == 16):
            raise ValueError(f"bits must be 2..8 or 16, got {v}")
        return v

    @model_validator(mode="after")
    def _check_group(self) -> QuantSpec:
        if self.granularity == "per_group" and self.group_size is None:
            raise ValueError("group_size is required when granularity='per_group'")
        if self.granularity != "per_group" and self.group_size is not None:
            raise ValueError(
                f"group_size={self.group_size} is only valid with granularity='per_group', "
                f"got granularity='{self.granularity}'"
            )
        return self

    @property
    def qmin(self) -> int:
        """Smallest integer code."""
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        """Largest integer code."""
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def storage_dtype(self) -> torch.dtype:
        """The smallest torch integer dtype that holds every code (before sub-byte packing)."""
        if self.bits <= 8:
            return torch.int8 if self.signed else torch.uint8
        return torch.int16 if self.signed else torch.int32

    def resolve_axis(self, ndim: int) -> int:
        """Return ``axis`` as a non-negative index for a tensor of ``ndim`` dims.

        Raises:
            ConfigError: the axis does not exist in such a tensor.
        """
        if not -max(ndim, 1) <= self.axis < max(ndim, 1):
            raise ConfigError(
                f"QuantSpec.axis={self.axis} is out of range for a tensor with {ndim} dims"
            )
        return self.axis % max(ndim, 1)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> QuantSpec:
        """A named spec, optionally with some fields changed.

        Names: ``int8``, ``int8c`` (per channel), ``uint8`` (asymmetric, for activations),
        ``int16``, ``int4`` (per channel), ``int4g128``, ``int4g32``, ``int2``, and in general
        ``[u]int<bits>[c|g<size>]`` (``u`` = unsigned asymmetric, ``c`` = per channel,
        ``g<size>`` = per group).

        Raises:
            ConfigError: the name matches no preset.

        Example:
            >>> QuantSpec.preset("int4g64").group_size
            64
            >>> QuantSpec.preset("int8", granularity="per_channel").granularity
            'per_channel'
        """
        key = name.lower()
        if key in _PRESETS:
            fields = dict(_PRESETS[key])
        else:
            m = _PATTERN.match(key)
            if m is None:
                valid = ", ".join(sorted(_PRESETS))
                raise ConfigError(
                    f"unknown QuantSpec preset '{name}'; valid names: {valid}, "
                    "or [u]int<bits>[c|g<size>]"
                )
            fields = {"bits": int(m.group(2))}
            if m.group(1):
                fields.update(signed=False, symmetric=False)
            if m.group(3) == "c":
                fields["granularity"] = "per_channel"
            elif m.group(4):
                fields.update(granularity="per_group", group_size=int(m.group(4)))
        fields.update(overrides)
        return cls(**fields)
