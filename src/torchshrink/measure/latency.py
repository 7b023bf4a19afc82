"""Real wall-clock latency of one forward pass: median and p90 over repeats after a warm-up.

The model runs in eval mode under ``torch.inference_mode()``; each repeat is timed with
``time.perf_counter_ns``. ``torch.set_num_threads(threads)`` is applied for the measurement and
the previous thread count is restored afterwards; the thread count used is reported. The loop
stops early once ``max_seconds`` have been spent (at least one timed repeat always runs), so a
large model cannot stall a profile. ``throughput = batch_size / median`` in samples per second.
Shared machines are noisy: compare medians and ratios measured in the same run.

Example:
    >>> import torch
    >>> from torch import nn
    >>> r = measure_latency(nn.Linear(8, 8), torch.zeros(4, 8), repeats=5, threads=1)
    >>> r.threads, r.batch_size, len(r.samples_ms), r.p90_ms >= r.p50_ms
    (1, 4, 5, True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.forward import Inputs, batch_size_of, call_model, eval_mode


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one forward pass over a batch.

    Attributes:
        p50_ms: median latency in milliseconds.
        p90_ms: 90th percentile (linear interpolation) in milliseconds.
        mean_ms: mean latency in milliseconds.
        min_ms: fastest repeat in milliseconds.
        samples_ms: every timed repeat, in order.
        throughput: samples per second, ``batch_size / p50``.
        threads: intra-op threads used (``torch.get_num_threads()`` during the measurement).
        batch_size: rows in the example batch (dimension 0 of its first tensor).
        warmup: untimed runs done first.
        capped: ``True`` if ``max_seconds`` stopped the loop before ``repeats`` runs.
    """

    p50_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    samples_ms: tuple[float, ...]
    throughput: float
    threads: int
    batch_size: int
    warmup: int
    capped: bool = False

    @property
    def median_ms(self) -> float:
        """``p50_ms`` under the name ``deploy.timing``'s records (and ``accelerate``) use."""
        return self.p50_ms


def measure_latency(
    model: nn.Module,
    inputs: Inputs,
    *,
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 20,
    max_seconds: float = 10.0,
) -> LatencyStats:
    """Time ``repeats`` forward passes of ``model`` on ``inputs`` after ``warmup`` untimed ones.

    Args:
        model: the model; put in eval mode for the measurement, its modes restored after.
        inputs: a tensor, a tuple of positional tensors or a dict of keyword tensors.
        threads: intra-op threads to use; ``None`` keeps torch's current setting.
        warmup: untimed runs first (caches, lazy kernel selection).
        repeats: timed runs.
        max_seconds: time budget for warm-up plus timed runs; at least one timed run happens.

    Raises:
        ConfigError: ``threads``, ``repeats`` or ``warmup`` is out of range.

    Example:
        >>> import torch
        >>> measure_latency(torch.nn.ReLU(), torch.zeros(2, 3), repeats=3).batch_size
        2
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"latency: 'threads' must be at least 1, got {threads}")
    if repeats < 1:
        raise ConfigError(f"latency: 'repeats' must be at least 1, got {repeats}")
    if warmup < 0:
        raise ConfigError(f"latency: 'warmup' must be 0 or more, got {warmup}")

    previous = torch.get_num_threads()
    samples: list[float] = []
    deadline = time.perf_counter_ns() + int(max_seconds * 1e9)
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        used = torch.get_num_threads()
        with eval_mode(model), torch.inference_mode():
            for _ in range(warmup):
                call_model(model, inputs)
                if time.perf_counter_ns() > deadline:
                    break
            for _ in range(repeats):
                start = time.perf_counter_ns()
                call_model(model, inputs)
                end = time.perf_counter_ns()
                samples.append((end - start) / 1e6)
                if end > deadline:
                    break
    finally:
        torch.set_num_threads(previous)

    arr = np.asarray(samples)
    p50 = float(np.percentile(arr, 50))
    batch = batch_size_of(inputs)
    return LatencyStats(
        p50_ms=p50,
        p90_ms=float(np.percentile(arr, 90)),
        mean_ms=float(arr.mean()),
        min_ms=float(arr.min()),
        samples_ms=tuple(samples),
        throughput=batch / (p50 / 1e3) if p50 > 0 else float("inf"),
        threads=used,
        batch_size=batch,
        warmup=warmup,
        capped=len(samples) < repeats,
    )
