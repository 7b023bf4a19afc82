"""Calibration observers: watch tensors, then choose a clipping range and qparams.

An observer is built for one :class:`QuantSpec` (per tensor, per channel or per group);
``observe(x)`` accumulates statistics over any number of batches and ``compute()`` returns
``(scale, zero_point)`` in the spec's compact shapes. Observers are registered by name, so a
config can say ``observer="mse"``; the histogram-based ones live in ``hist_observers.py``.

Example:
    >>> import torch
    >>> obs = make_observer("minmax", QuantSpec.preset("uint8"))
    >>> obs.observe(torch.tensor([0.0, 2.0]))
    >>> obs.observe(torch.tensor([-1.0, 1.0]))
    >>> scale, zp = obs.compute()
    >>> round(float(scale), 4), int(zp)
    (0.0118, 85)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch

from torchshrink.core.errors import ConfigError, EmptyDataError, ShapeError
from torchshrink.core.registry import Registry
from torchshrink.quantize.primitives import check_finite, compute_qparams, param_shape, to_blocks
from torchshrink.quantize.spec import QuantSpec

OBSERVERS: Registry[type[Observer]] = Registry("observer", error=ConfigError)


def register_observer(name: str) -> Callable[[type[Observer]], type[Observer]]:
    """Class decorator that registers an :class:`Observer` subclass under ``name``.

    Example:
        >>> sorted(OBSERVERS)[:3]
        ['kl', 'minmax', 'moving_average']
    """
    return OBSERVERS.register(name)


def make_observer(kind: str, spec: QuantSpec, /, **kwargs: Any) -> Observer:
    """Build the observer registered as ``kind``; unknown kinds raise ``ConfigError``.

    Keyword arguments (e.g. ``name="fc1.weight"``, ``percentile=99.9``) go to its constructor.
    """
    return OBSERVERS.get(kind)(spec, **kwargs)


class Observer(ABC):
    """Base class: shared input checks and block layout; subclasses pick the clip range.

    Subclasses implement ``_update(blocks)`` with ``blocks`` of shape ``(R, K)`` in float64
    (one row per scale block) and ``clip_range()`` returning ``(lo, hi)`` of shape ``(R,)``.

    Args:
        spec: how the observed tensor will be quantized.
        name: what is observed (e.g. ``"layer1.conv.weight"``), used in error messages.
    """

    def __init__(self, spec: QuantSpec, *, name: str = "tensor") -> None:
        self.spec = spec
        self.name = name
        self.num_batches = 0
        self._shape: tuple[int, ...] | None = None

    def observe(self, x: torch.Tensor) -> None:
        """Accumulate statistics of ``x`` (any float tensor; empty tensors are ignored).

        Raises:
            ConfigError: ``x`` holds NaN or Inf.
            ShapeError: the block layout differs from earlier batches (e.g. channel count).
        """
        check_finite(x, self.name)
        if x.numel() == 0:
            return
        shape = param_shape(x.shape, self.spec)
        if self._shape is not None and shape != self._shape:
            raise ShapeError(
                f"observer for {self.name}: qparam shape {shape} of this batch differs from "
                f"{self._shape} of earlier batches"
            )
        self._shape = shape
        self._update(to_blocks(x.detach(), self.spec).double())  # (R, K)
        self.num_batches += 1

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(scale, zero_point)`` for everything observed so far.

        Raises:
            EmptyDataError: nothing was observed.
        """
        if self._shape is None:
            raise EmptyDataError(f"observer for {self.name} has observed no data")
        lo, hi = self.clip_range()
        return compute_qparams(lo.reshape(self._shape), hi.reshape(self._shape), self.spec)

    @abstractmethod
    def _update(self, blocks: torch.Tensor) -> None:
        """Fold a ``(R, K)`` float64 batch into the statistics."""

    @abstractmethod
    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen ``(lo, hi)`` per block, each ``(R,)`` float64."""


@register_observer("minmax")
class MinMaxObserver(Observer):
    """Running minimum and maximum over all batches (no clipping).

    Example:
        >>> obs = MinMaxObserver(QuantSpec(bits=8))
        >>> obs.observe(torch.tensor([-2.0, 1.0]))
        >>> [float(v) for v in obs.clip_range()]
        [-2.0, 1.0]
    """

    def __init__(self, spec: QuantSpec, *, name: str = "tensor") -> None:
        super().__init__(spec, name=name)
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None

    def _update(self, blocks: torch.Tensor) -> None:
        lo, hi = blocks.amin(dim=1), blocks.amax(dim=1)  # (R,)
        if self.min_val is None or self.max_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = torch.minimum(self.min_val, lo)
            self.max_val = torch.maximum(self.max_val, hi)

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.min_val is not None and self.max_val is not None
        return self.min_val, self.max_val


@register_observer("moving_average")
class MovingAverageMinMaxObserver(MinMaxObserver):
    """Exponential moving average of per-batch minima and maxima (robust to one odd batch).

    Args:
        spec: the quantization spec.
        averaging_constant: weight of the newest batch, in ``(0, 1]``.
        name: what is observed, for messages.

    Example:
        >>> obs = MovingAverageMinMaxObserver(QuantSpec(bits=8), averaging_constant=0.5)
        >>> obs.observe(torch.tensor([0.0, 4.0]))
        >>> obs.observe(torch.tensor([0.0, 2.0]))
        >>> float(obs.clip_range()[1])
        3.0
    """

    def __init__(
        self, spec: QuantSpec, *, averaging_constant: float = 0.01, name: str = "tensor"
    ) -> None:
        if not 0 < averaging_constant <= 1:
            raise ConfigError(f"averaging_constant must be in (0, 1], got {averaging_constant}")
        super().__init__(spec, name=name)
        self.averaging_constant = averaging_constant

    def _update(self, blocks: torch.Tensor) -> None:
        lo, hi = blocks.amin(dim=1), blocks.amax(dim=1)  # (R,)
        if self.min_val is None or self.max_val is None:
            self.min_val, self.max_val = lo, hi
        else:
            c = self.averaging_constant
            self.min_val = self.min_val + c * (lo - self.min_val)
            self.max_val = self.max_val + c * (hi - self.max_val)
