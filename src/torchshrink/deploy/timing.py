"""Interleaved timing: several callables timed round-robin so they share the machine's noise.

On a shared machine the load changes from second to second. Timing candidate A for ten runs and
then candidate B for ten runs compares A under one load with B under another; timing them in
turns (A, B, A, B, ...) gives each the same mix of quiet and busy moments, so the ratio of their
medians is meaningful even when the absolute times are not.

Example:
    >>> import torch
    >>> x = torch.randn(64, 64)
    >>> t = interleaved_times({"mm": lambda: x @ x, "add": lambda: x + x}, rounds=5, warmup=1)
    >>> sorted(t), len(t["mm"].samples_ms), t["mm"].median_ms > 0
    (['add', 'mm'], 5, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from torchshrink.core.errors import ConfigError


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of one callable from an interleaved run.

    Attributes:
        median_ms: median over the timed rounds, in milliseconds.
        p90_ms: 90th percentile, in milliseconds.
        min_ms: fastest round, in milliseconds.
        samples_ms: every timed round, in order.
    """

    median_ms: float
    p90_ms: float
    min_ms: float
    samples_ms: tuple[float, ...]


def interleaved_times(
    fns: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 10,
    warmup: int = 2,
    max_seconds: float | None = None,
    settle_s: float = 0.0,
    primed: int = 0,
) -> dict[str, Timing]:
    """Time every callable once per round, in turns, and return each one's median.

    Runs happen under ``torch.inference_mode()``. The order inside a round alternates
    (forwards on even rounds, backwards on odd ones) so that no callable always runs right
    after the same neighbour (cache and frequency effects).

    Args:
        fns: name -> zero-argument callable.
        rounds: timed rounds (each callable runs once per round).
        warmup: untimed rounds first (lazy kernel choice, JIT profiling runs, caches).
        max_seconds: stop after the round during which this budget ran out; at least one
            timed round always runs. ``None``: no budget.
        settle_s: untimed pause before each timed call, so that threads a runtime left
            spinning (OpenMP, ONNX Runtime) have gone idle and do not slow the next callable.
        primed: untimed calls of the same callable right before each timed one (after the
            pause). ``0``: each timed call starts cold, after the pause and the other callables,
            as an isolated request does (threads asleep, caches and clocks cold); ``1`` or more:
            the timed call sees what back-to-back calls see (steady state).

    Raises:
        ConfigError: ``fns`` is empty or ``rounds`` / ``warmup`` is out of range.

    Example:
        >>> interleaved_times({"noop": lambda: None}, rounds=3, warmup=0)["noop"].samples_ms[0] >= 0
        True
    """
    if not fns:
        raise ConfigError("interleaved timing: 'fns' is empty; give at least one callable")
    if rounds < 1:
        raise ConfigError(f"interleaved timing: 'rounds' must be at least 1, got {rounds}")
    if warmup < 0:
        raise ConfigError(f"interleaved timing: 'warmup' must be 0 or more, got {warmup}")
    if settle_s < 0:
        raise ConfigError(f"interleaved timing: 'settle_s' must be 0 or more, got {settle_s}")
    if primed < 0:
        raise ConfigError(f"interleaved timing: 'primed' must be 0 or more, got {primed}")
    names = list(fns)
    samples: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(warmup):
            for n in names:
                fns[n]()
        for r in range(rounds):
            order = names if r % 2 == 0 else names[::-1]
            for n in order:
                if settle_s:
                    time.sleep(settle_s)
                for _ in range(primed):
                    fns[n]()
                t0 = time.perf_counter_ns()
                fns[n]()
                samples[n].append((time.perf_counter_ns() - t0) / 1e6)
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
    return {n: _timing(s) for n, s in samples.items()}


def _timing(samples: list[float]) -> Timing:
    arr = np.asarray(samples)
    return Timing(
        median_ms=float(np.median(arr)),
        p90_ms=float(np.percentile(arr, 90)),
        min_ms=float(arr.min()),
        samples_ms=tuple(samples),
    )
