"""Pick the fastest execution backend of a model on this machine that keeps its outputs.

:func:`accelerate` builds every candidate backend (:mod:`torchshrink.deploy.backends`: fp32,
bf16, PyTorch dynamic int8, torchao int8, ONNX Runtime fp32 / fused / int8 variants, opt-in
``torch.compile`` ones), compares each one's primary output with fp32 (mean and worst
per-sample cosine, max abs difference, top-1 agreement for classifiers), times them all in
interleaved rounds with a fixed thread count, and returns the fastest that meets the fidelity
bound, with a report of every candidate: latency, speedup, fidelity, which ops ran in low
precision and which stayed in float, or why it failed. A candidate that fails to build or run
is reported, never raised. Nothing is assumed: which path wins depends on the CPU (AMX,
AVX512-VNNI, AVX512-BF16), the model and the batch, so it is measured.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
    ...                           torch.nn.Linear(32, 4)).eval()
    >>> fast, rep = accelerate(net, torch.randn(8, 16), fidelity=0.99, threads=1,
    ...                        candidates=["fp32", "bf16"], config=AccelerateConfig(rounds=2))
    >>> fast(torch.randn(8, 16)).shape, [c.name for c in rep.candidates]
    (torch.Size([8, 4]), ['fp32', 'bf16'])
"""

from __future__ import annotations

import functools
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.forward import Inputs, call_model
from torchshrink.deploy.backends import (
    BACKENDS,
    BuildContext,
    Built,
    default_candidates,
    primary_output,
)
from torchshrink.deploy.timing import Timing, interleaved_times


class AccelerateConfig(BaseModel):
    """How :func:`accelerate` measures.

    Attributes:
        rounds: interleaved timing rounds (each candidate runs once per round).
        warmup: untimed rounds first.
        max_seconds: timing budget; at least one round always runs.
        min_top1: also require this top-1 agreement with fp32 (classifier outputs only).
        settle_s: untimed pause before each timed run. Runtimes keep their threads spinning
            for a while after a run (OpenMP, ONNX Runtime); on a machine with few cores that
            steals from whichever candidate runs next, so its position in the round changed
            its speedup by 20-30% (all-MiniLM-L6-v2, 2 cores). ``0`` times back to back.

    Example:
        >>> AccelerateConfig(rounds=3).warmup
        1
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rounds: int = Field(default=10, ge=1)
    warmup: int = Field(default=1, ge=0)
    max_seconds: float = Field(default=300.0, gt=0)
    min_top1: float | None = Field(default=None, ge=0, le=1)
    settle_s: float = Field(default=0.1, ge=0)


@dataclass(frozen=True)
class Fidelity:
    """A candidate's primary output against fp32's, per sample (dimension 0).

    Attributes:
        cosine: mean per-sample cosine similarity of the flattened outputs.
        min_cosine: worst sample's cosine.
        max_abs_diff: largest absolute difference.
        top1_agreement: share of samples with the same arg-max, for ``(B, C)`` outputs.
    """

    cosine: float
    min_cosine: float
    max_abs_diff: float
    top1_agreement: float | None = None


@dataclass(frozen=True)
class AccelCandidate:
    """One measured backend.

    Attributes:
        name: the backend (a key of :data:`~torchshrink.deploy.backends.BACKENDS`).
        median_ms: median latency over interleaved rounds (``nan`` if it failed).
        p90_ms: 90th percentile latency.
        speedup: fp32 median / this median, from the same run.
        fidelity: output agreement with fp32 (``None`` if it failed).
        meets_bound: the fidelity bound holds; only such candidates are chosen.
        low_precision: op / module type -> count of what ran in int8 or bf16.
        float_ops: op / module type -> count of compute that stayed in fp32.
        build_s: seconds to build (export, quantize, compile).
        note: e.g. which layers a mixed candidate kept in float.
        error: why it could not be built or run, else ``None``.
        samples_ms: the latency of every timed round, in round order (sample ``i`` of every
            candidate comes from the same round, for same-round ratios).
    """

    name: str
    median_ms: float
    p90_ms: float
    speedup: float
    fidelity: Fidelity | None
    meets_bound: bool
    low_precision: dict[str, int] = field(default_factory=dict)
    float_ops: dict[str, int] = field(default_factory=dict)
    build_s: float = 0.0
    note: str = ""
    error: str | None = None
    samples_ms: tuple[float, ...] = ()


@dataclass(frozen=True)
class AccelerateReport:
    """Every candidate and the one chosen.

    Attributes:
        chosen: name of the fastest candidate within the bound (``"fp32"`` if none is faster).
        threads: intra-op threads every candidate ran with.
        fidelity_bound: the mean-cosine bound.
        reference_ms: fp32 median latency.
        chosen_ms: chosen candidate's median latency.
        speedup: ``reference_ms / chosen_ms``.
        candidates: every candidate, in the order measured.
        hints: advice on what was not tried (e.g. static int8 for convolutions needs
            calibration data).
    """

    chosen: str
    threads: int
    fidelity_bound: float
    reference_ms: float
    chosen_ms: float
    speedup: float
    candidates: tuple[AccelCandidate, ...]
    hints: tuple[str, ...] = ()

    def table(self) -> str:
        """One line per candidate: latency, speedup, cosine, low-precision ops or error."""
        lines = []
        for c in self.candidates:
            mark = "*" if c.name == self.chosen else " "
            if c.error is not None:
                lines.append(f"{mark} {c.name:24s} FAILED {c.error}")
                continue
            cos = c.fidelity.cosine if c.fidelity else math.nan
            lines.append(
                f"{mark} {c.name:24s} {c.median_ms:10.1f} ms {c.speedup:6.2f}x cos {cos:.4f} "
                f"{'ok ' if c.meets_bound else 'LOW'} low={c.low_precision} float={c.float_ops}"
            )
        lines += [f"hint: {h}" for h in self.hints]
        return "\n".join(lines)


class Accelerated(nn.Module):
    """The chosen backend as a module: same inputs as the model, primary output as float32.

    Example:
        >>> m = Accelerated(Built(lambda x: x * 2), threads=1)
        >>> m(torch.ones(2)).tolist()
        [2.0, 2.0]
    """

    def __init__(self, built: Built, *, threads: int) -> None:
        super().__init__()
        self.built = built
        self.threads = threads

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        inputs: Inputs = kwargs if kwargs else (args[0] if len(args) == 1 else args)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                return self.built.run(inputs)
        finally:
            torch.set_num_threads(previous)


def fidelity_of(out: torch.Tensor, ref: torch.Tensor) -> Fidelity:
    """Compare a candidate's output with the fp32 reference, sample by sample.

    Example:
        >>> f = fidelity_of(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.1]]))
        >>> round(f.cosine, 3), f.top1_agreement
        (0.995, 1.0)
    """
    if out.shape != ref.shape:
        raise ValueError(f"output shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    a = out.double().reshape(max(1, out.shape[0] if out.dim() else 1), -1)  # (B, F)
    b = ref.double().reshape(a.shape)  # (B, F)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)  # (B,)
    top1 = None
    if ref.dim() == 2 and ref.shape[1] > 1:
        top1 = float((out.argmax(1) == ref.argmax(1)).double().mean())
    return Fidelity(float(cos.mean()), float(cos.min()), float((a - b).abs().max()), top1)


def accelerate(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    fidelity: float = 0.995,
    candidates: Sequence[str] | None = None,
    threads: int | None = None,
    calibration: Sequence[Inputs] | None = None,
    config: AccelerateConfig | None = None,
) -> tuple[Accelerated, AccelerateReport]:
    """Measure every backend on this machine; return the fastest within ``fidelity``.

    ``model`` is not changed. The thread count of the process is the same afterwards.

    Args:
        model: a float model (eval-mode semantics). Its primary output (first tensor) is what
            is compared: wrap the model when another output (e.g. a pooled embedding) matters.
        example_inputs: a representative batch (tensor, tuple or dict of tensors); the batch
            size and sequence length you will run matter for the timings.
        fidelity: minimum mean per-sample cosine similarity with the fp32 output.
        candidates: backend names to try (default: all but the opt-in compiled ones; ORT
            ones when onnxruntime imports, with more than one thread also their batch-split
            twins ``NAME+split``; torchao when it imports). ``"fp32"`` is always measured, as
            the reference.
        threads: intra-op threads for every candidate (default: torch's current setting).
        calibration: input batches for static quantization (enables ``ort_static_int8``).
        config: timing settings and an optional top-1 agreement bound.

    Returns:
        ``(fast, report)``: ``fast`` runs the chosen backend; ``report.table()`` prints all.

    Raises:
        ConfigError: an unknown candidate name, ``fidelity`` outside (0, 1] or ``threads < 1``.

    Example:
        >>> import torch
        >>> fast, rep = accelerate(torch.nn.Linear(8, 4), torch.randn(4, 8), threads=1,
        ...                        candidates=["torch_dynamic_int8"], fidelity=0.9,
        ...                        config=AccelerateConfig(rounds=2))
        >>> sorted(c.name for c in rep.candidates), rep.reference_ms > 0
        (['fp32', 'torch_dynamic_int8'], True)
    """
    cfg = config or AccelerateConfig()
    names = _names(candidates, calibration is not None)
    if not 0 < fidelity <= 1:
        raise ConfigError(f"accelerate: 'fidelity' must be in (0, 1], got {fidelity}")
    n_threads = torch.get_num_threads() if threads is None else threads
    if n_threads < 1:
        raise ConfigError(f"accelerate: 'threads' must be at least 1, got {threads}")
    if candidates is None and n_threads > 1:
        # Each default ONNX Runtime candidate also batch-split across the threads.
        names += [f"{n}+split" for n in names if n.startswith("ort_")]
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        with tempfile.TemporaryDirectory(prefix="torchshrink-accel-") as tmp:
            return _run(model.eval(), example_inputs, names, fidelity, n_threads, cfg,
                        calibration, Path(tmp))  # fmt: skip
    finally:
        torch.set_num_threads(previous)


def _times(fns: dict[str, Any], cfg: AccelerateConfig) -> dict[str, Timing]:
    """Interleaved rounds (order reversed every other round), a pause before each run."""
    if cfg.settle_s == 0:
        return interleaved_times(
            fns, rounds=cfg.rounds, warmup=cfg.warmup, max_seconds=cfg.max_seconds
        )
    names = list(fns)
    samples: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    for r in range(cfg.warmup + cfg.rounds):
        for n in names if r % 2 == 0 else names[::-1]:
            time.sleep(cfg.settle_s)
            one = interleaved_times({n: fns[n]}, rounds=1, warmup=0)[n].samples_ms[0]
            if r >= cfg.warmup:
                samples[n].append(one)
        if r >= cfg.warmup and time.perf_counter() - start > cfg.max_seconds:
            break
    out = {}
    for n, sm in samples.items():
        arr = np.asarray(sm)
        out[n] = Timing(float(np.median(arr)), float(np.percentile(arr, 90)), float(arr.min()),
                        tuple(sm))  # fmt: skip
    return out


def backends() -> dict[str, Callable[[BuildContext], Built]]:
    """Every candidate :func:`accelerate` can measure, by name.

    :data:`~torchshrink.deploy.backends.BACKENDS` plus the ONNX Runtime backends that
    :mod:`~torchshrink.deploy.ort_backends` builds and that table does not list yet, and every
    ONNX Runtime backend's batch-split twin ``NAME+split``
    (:mod:`~torchshrink.deploy.ort_split`); those are measured only when named.

    Example:
        >>> "ort_int8_smooth_attn" in backends(), "ort_int8+split" in backends()
        (True, True)
    """
    from torchshrink.deploy import ort_backends, ort_split

    extra = {
        n: functools.partial(ort_backends.build, n) for n in ort_backends.NAMES if n not in BACKENDS
    }
    split = {
        n + ort_split.SUFFIX: functools.partial(ort_split.build_split, n + ort_split.SUFFIX)
        for n in ort_backends.NAMES
    }
    return {**BACKENDS, **extra, **split}


def _names(candidates: Sequence[str] | None, calibration: bool) -> list[str]:
    names = (
        list(candidates) if candidates is not None else default_candidates(calibration=calibration)
    )
    known = backends()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"accelerate: unknown candidate(s) {unknown}; choose from {sorted(known)}"
        )
    return list(dict.fromkeys(["fp32", *names]))


def _run(
    model: nn.Module,
    inputs: Inputs,
    names: list[str],
    bound: float,
    threads: int,
    cfg: AccelerateConfig,
    calibration: Sequence[Inputs] | None,
    workdir: Path,
) -> tuple[Accelerated, AccelerateReport]:
    with torch.inference_mode():
        reference = primary_output(call_model(model, inputs)).float()
    ctx = BuildContext(
        model,
        inputs,
        threads,
        workdir,
        tuple(calibration) if calibration else None,
        reference,
        bound,
    )
    registry = backends()
    built: dict[str, Built] = {}
    fid: dict[str, Fidelity] = {}
    build_s: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            b = registry[name](ctx)
            with torch.inference_mode():
                fid[name] = fidelity_of(b.run(inputs), reference)
            built[name] = b
        except Exception as exc:  # a backend that cannot handle this model: report it
            first = str(exc).splitlines()[0] if str(exc) else ""
            errors[name] = f"{type(exc).__name__}: {first}"[:300]
        build_s[name] = time.perf_counter() - t0
    if "fp32" not in built:
        raise RuntimeError(f"accelerate: the fp32 reference itself failed: {errors.get('fp32')}")
    times = _times({n: functools.partial(b.run, inputs) for n, b in built.items()}, cfg)
    ref_ms = times["fp32"].median_ms
    results = []
    for name in names:
        if name in errors:
            nan = math.nan
            results.append(AccelCandidate(name, nan, nan, nan, None, False,
                                          build_s=build_s[name], error=errors[name]))  # fmt: skip
            continue
        f, b, t = fid[name], built[name], times[name]
        ok = f.cosine >= bound and (
            cfg.min_top1 is None or f.top1_agreement is None or f.top1_agreement >= cfg.min_top1
        )
        results.append(
            AccelCandidate(
                name,
                t.median_ms,
                t.p90_ms,
                ref_ms / t.median_ms,
                f,
                ok,
                b.low_precision,
                b.float_ops,
                build_s[name],
                b.note,
                samples_ms=t.samples_ms,
            )
        )
    chosen = min((r for r in results if r.meets_bound), key=lambda r: r.median_ms, default=None)
    best = chosen.name if chosen is not None else "fp32"
    hints = []
    if calibration is None and any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
        hints.append(
            "no calibration data: the int8 candidates quantize Linear / MatMul weights only and "
            "the convolutions stay float; pass calibration= batches to also measure static int8 "
            "(ort_static_int8, torch_static_int8)"
        )
    report = AccelerateReport(
        best, threads, bound, ref_ms, times[best].median_ms,
        ref_ms / times[best].median_ms, tuple(results), tuple(hints),
    )  # fmt: skip
    return Accelerated(built[best], threads=threads), report
