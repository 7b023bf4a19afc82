"""One call that measures everything about a model: the proof behind every compression step.

``profile`` reports params, non-zeros, bytes (dense fp32, stored, serialized file, after zstd),
MACs (dense and non-zero estimate), real latency (p50 / p90, throughput), peak working memory,
an energy estimate and, with data, accuracy. It never changes the model: every pass runs in
eval mode under ``torch.inference_mode()`` and each module's train/eval flag is restored.

``example_inputs`` follows the convention of :mod:`torchshrink.core.forward`: a tensor, a tuple
of positional tensors or a dict of keyword tensors, with the batch along dimension 0. MACs,
memory and energy are for one forward pass over that whole batch.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    >>> p = profile(m, torch.zeros(1, 1, 28, 28), measure_latency=False, measure_memory=False)
    >>> p.params, p.macs, p.dense_bytes
    (7850, 7840, 31400)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from torchshrink.core.databundle import DataBundle
from torchshrink.core.forward import (
    Inputs,
    batch_size_of,
    checked_forward,
    eval_mode,
    resize_batch,
)
from torchshrink.measure.accuracy import evaluate
from torchshrink.measure.energy import assumptions, model_energy
from torchshrink.measure.latency import measure_latency as time_forward
from torchshrink.measure.macs import count_macs
from torchshrink.measure.memory import measure_memory as memory_of
from torchshrink.measure.params import module_param_stats, param_stats
from torchshrink.measure.size import model_size


@dataclass(frozen=True)
class LayerProfile:
    """One layer's numbers (MACs are for the whole example batch).

    Example:
        >>> LayerProfile("fc1", "Linear", 10, 8, 100, 80).to_dict()["nonzero"]
        8
    """

    name: str
    type: str
    params: int
    nonzero: int
    macs: int
    nonzero_macs: int
    output_shape: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["output_shape"] = list(self.output_shape) if self.output_shape is not None else None
        return d


@dataclass(frozen=True)
class ModelProfile:
    """Every measurement of one model (see :func:`profile`); ``None`` means not measured.

    ``energy_mj`` is millijoules for one forward pass of the **whole batch** (the weights are
    read once per batch); ``energy_mj_per_sample`` divides it by ``batch_size``. ``macs``,
    ``flops``, ``nonzero_macs`` and ``peak_memory_bytes`` are also for the whole batch;
    ``throughput`` is samples per second.
    """

    params: int
    nonzero_params: int
    dense_bytes: int
    weight_bytes: int
    bytes_by_dtype: dict[str, int]
    file_bytes: int
    zstd_bytes: int
    macs: int
    flops: int
    nonzero_macs: int
    batch_size: int
    threads: int
    energy_mj: float
    energy_mj_per_sample: float
    latency_ms_p50: float | None = None
    latency_ms_p90: float | None = None
    latency_samples_ms: tuple[float, ...] = ()
    throughput: float | None = None
    peak_memory_bytes: int | None = None
    accuracy: float | None = None
    layers: tuple[LayerProfile, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def sparsity(self) -> float:
        """Fraction of parameters that are exactly zero."""
        return 1.0 - self.nonzero_params / self.params if self.params else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``accuracy`` is present only when it was measured.

        Example:
            >>> import json, torch
            >>> p = profile(torch.nn.Linear(4, 2), torch.zeros(1, 4), measure_latency=False)
            >>> sorted(json.loads(json.dumps(p.to_dict())))[:3]
            ['batch_size', 'bytes_by_dtype', 'dense_bytes']
        """
        d = asdict(self)
        d["layers"] = [layer.to_dict() for layer in self.layers]
        d["latency_samples_ms"] = list(self.latency_samples_ms)
        d["notes"] = list(self.notes)
        d["sparsity"] = self.sparsity
        if self.accuracy is None:
            del d["accuracy"]
        return d


def busy_machine_note(threads: int, *, load: float | None = None) -> str | None:
    """A warning when other work competes for the cores the latency measurement used.

    Intra-op threads spin while they wait for each other, so on an oversubscribed machine a
    multi-threaded forward pass can take orders of magnitude longer than it would alone.

    Example:
        >>> busy_machine_note(2, load=0.1) is None
        True
    """
    import os

    cores = os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # not available on this platform
            return None
    if load + threads <= cores + 0.5:
        return None
    return (
        f"latency: the machine is busy (1-minute load {load:.1f} on {cores} cores, measuring "
        f"with {threads} threads); timings may be far slower than on an idle machine. Compare "
        "ratios measured in the same run, or use fewer threads"
    )


def _accuracy(model: nn.Module, data: Any, notes: list[str]) -> float | None:
    if data is None:
        return None
    if isinstance(data, DataBundle):
        if data.task != "classification" or data.num_classes is None:
            notes.append(
                f"accuracy: data '{data.name}' is {data.task} data without labels; skipped"
            )
            return None
        data = data.test
    if not isinstance(data, (Dataset, Iterable)):
        raise TypeError(f"data must be a DataBundle or a dataset, got {type(data).__name__}")
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    with eval_mode(model):
        return evaluate(model, data, device=device).accuracy


def profile(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    data: DataBundle | Dataset[Any] | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 20,
    measure_latency: bool = True,
    measure_memory: bool = True,
    file_path: str | Path | None = None,
) -> ModelProfile:
    """Measure ``model`` on ``example_inputs``; the model is not changed.

    Args:
        model: the model to measure.
        example_inputs: a tensor, a tuple of positional tensors or a dict of keyword tensors;
            dimension 0 is the batch.
        data: a :class:`DataBundle` (its test split is used) or a dataset of ``(x, y)`` pairs;
            when given, top-1 ``accuracy`` is measured with :func:`evaluate`.
        batch_size: repeat or cut the example inputs to this batch size first.
        threads: intra-op threads for the latency measurement (restored afterwards).
        warmup: untimed forward passes before timing.
        repeats: timed forward passes (median and p90 are reported).
        measure_latency: time the model (the slowest part; off for quick counts).
        measure_memory: measure peak working memory with ``torch.profiler``.
        file_path: the file the model was saved to; its size on disk is ``file_bytes``.

    Raises:
        ShapeError: the example inputs do not fit the model; names the failing layer.
        ModelFileError: ``file_path`` does not exist.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> p = profile(nn.Linear(8, 4), torch.zeros(2, 8), repeats=3, threads=1)
        >>> p.batch_size, p.threads, p.latency_ms_p90 >= p.latency_ms_p50
        (2, 1, True)
    """
    inputs = example_inputs if batch_size is None else resize_batch(example_inputs, batch_size)
    batch = batch_size_of(inputs)
    notes: list[str] = []
    with eval_mode(model), torch.inference_mode():
        checked_forward(model, inputs)  # a bad input fails here, naming the layer

    macs = count_macs(model, inputs)
    stats = param_stats(model)
    size = model_size(model, file_path=file_path)
    if size.note:
        notes.append(size.note)
    latency = None
    if measure_latency:
        latency = time_forward(model, inputs, threads=threads, warmup=warmup, repeats=repeats)
        if latency.capped:
            notes.append(f"latency: time cap reached after {len(latency.samples_ms)} repeats")
        busy = busy_machine_note(latency.threads)
        if busy:
            notes.append(busy)
    memory = memory_of(model, inputs) if measure_memory else None
    energy = model_energy(model, inputs, macs=macs)

    notes.append(
        f"macs, flops, memory and energy_mj are for one forward pass of a batch of {batch}"
    )
    notes.append("macs = FlopCounterMode flops / 2 (matmul and conv only)")
    if macs.nonzero_macs < macs.macs:
        notes.append(
            "nonzero_macs = per-layer macs x weight density: zeros skipped (dense kernels do not)"
        )
    if memory is not None:
        notes.append(f"peak_memory_bytes: {memory.method}; weights and inputs not included")
    notes.append(assumptions())
    accuracy = _accuracy(model, data, notes)

    modules = dict(model.named_modules())
    layers = []
    for row in macs.layers:
        n, nz = module_param_stats(modules[row.name])
        layers.append(
            LayerProfile(
                name=row.name or "(model)",
                type=row.type,
                params=n,
                nonzero=nz,
                macs=row.macs,
                nonzero_macs=row.nonzero_macs,
                output_shape=row.output_shape,
            )
        )
    return ModelProfile(
        params=stats.params,
        nonzero_params=stats.nonzero_params,
        dense_bytes=stats.dense_bytes,
        weight_bytes=stats.weight_bytes,
        bytes_by_dtype=stats.bytes_by_dtype,
        file_bytes=size.file_bytes,
        zstd_bytes=size.zstd_bytes,
        macs=macs.macs,
        flops=macs.flops,
        nonzero_macs=macs.nonzero_macs,
        batch_size=batch,
        threads=latency.threads if latency is not None else (threads or torch.get_num_threads()),
        energy_mj=energy.total_mj,
        energy_mj_per_sample=energy.per_sample_mj,
        latency_ms_p50=latency.p50_ms if latency else None,
        latency_ms_p90=latency.p90_ms if latency else None,
        latency_samples_ms=latency.samples_ms if latency else (),
        throughput=latency.throughput if latency else None,
        peak_memory_bytes=memory.peak_bytes if memory else None,
        accuracy=accuracy,
        layers=tuple(layers),
        notes=tuple(notes),
    )
