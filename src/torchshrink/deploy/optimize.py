"""Make a model run fast for inference on this CPU, choosing every setting by measuring it.

:func:`optimize_for_inference` builds candidate variants of the model (BatchNorm folded into
convolutions; channels_last memory format; TorchScript trace + freeze, with or without
``torch.jit.optimize_for_inference``; ONNX Runtime fp32; the batch split across threads;
optionally ``torch.compile``; see :mod:`torchshrink.deploy.candidates`), checks each one's output against the unchanged model, times all of them in
interleaved rounds (so they share the machine's noise) and keeps the fastest that matches.
With ``threads=None`` the thread count is chosen the same way. Nothing is assumed to help:
on this machine, for example, TorchScript freezing is a large win for narrow (pruned) ResNets
and a loss for the dense one.

Given ``baseline=`` (the dense model a pruned model came from), the baseline is optimised the
same way and the two winners are timed head to head: a pruned model slower than its dense
original is reported loudly (:class:`~torchshrink.deploy.optimize_report.SlowerThanBaselineWarning`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    >>> x = torch.randn(4, 3, 16, 16)
    >>> fast, report = optimize_for_inference(net, x, threads=1,
    ...                                       config=OptimizeConfig(rounds=3, warmup=1))
    >>> bool(torch.allclose(fast(x), net(x), atol=1e-4)), report.threads
    (True, 1)
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.forward import Inputs, batch_size_of, call_model, eval_mode
from torchshrink.deploy.candidates import InferenceModule, build_variant, has_4d_input, run
from torchshrink.deploy.optimize_report import (
    CandidateResult,
    OptimizeReport,
    compare_to_baseline,
)
from torchshrink.deploy.timing import interleaved_times


class OptimizeConfig(BaseModel):
    """Which candidates :func:`optimize_for_inference` tries and how it measures them.

    Attributes:
        fold_bn: fold BatchNorm into the preceding conv / linear layer in every candidate.
        channels_last: also try the channels_last memory format (only with 4-D inputs).
        jit: also try ``torch.jit.trace`` + ``torch.jit.freeze``.
        jit_optimize: also try frozen TorchScript + ``torch.jit.optimize_for_inference``
            (oneDNN blocked layouts kept between ops, conv + add / ReLU fusions).
        compile: also try ``torch.compile`` (inductor, weights frozen); needs a C++ compiler
            and takes tens of seconds per candidate, so it is off by default.
        compile_mode: the ``torch.compile`` mode (e.g. ``"max-autotune-no-cudagraphs"``).
        ort: also try ONNX Runtime fp32 (needs ``onnxruntime``; recorded as failed without).
        direct: also try the direct 3x3 convolution kernel with fused residual add / ReLU
            (only with 4-D inputs; needs AVX-512F and a C++ compiler the first time, recorded
            as failed without).
        split: also try each jit / compile / ort candidate with the batch split across the
            threads, one intra-op thread each (only with more than one thread, a batch of at
            least two and positional inputs).
        thread_candidates: thread counts to try when ``threads=None``; default: 1 and every
            power of two up to ``os.cpu_count()``, plus the current setting.
        rounds: interleaved timed rounds per measurement.
        warmup: untimed rounds first (TorchScript profiles its first calls).
        max_seconds: time budget per measurement phase (at least one round runs).
        settle_s: untimed pause before each timed call (threads another candidate left
            spinning go idle first, so they do not slow the one being timed).
        atol: absolute output tolerance.
        rtol: tolerance relative to the largest absolute reference output.
        slower_margin: relative slack of the never-slower check (0: any slower median fires).

    Example:
        >>> OptimizeConfig(rounds=5).jit
        True
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fold_bn: bool = True
    channels_last: bool = True
    jit: bool = True
    jit_optimize: bool = True
    compile: bool = False
    compile_mode: str | None = None
    ort: bool = True
    direct: bool = True
    split: bool = True
    thread_candidates: tuple[int, ...] | None = None
    rounds: int = Field(default=10, ge=1)
    warmup: int = Field(default=2, ge=0)
    max_seconds: float = Field(default=60.0, gt=0)
    settle_s: float = Field(default=0.01, ge=0)
    atol: float = Field(default=1e-4, ge=0)
    rtol: float = Field(default=1e-4, ge=0)
    slower_margin: float = Field(default=0.0, ge=0)


def optimize_for_inference(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    threads: int | None = None,
    config: OptimizeConfig | None = None,
    baseline: nn.Module | None = None,
) -> tuple[InferenceModule, OptimizeReport]:
    """Return the fastest inference-ready copy of ``model`` that matches its output.

    ``model`` is not changed. The returned module sets its thread count and input memory
    format on every call and restores the thread count afterwards; the thread count of the
    process is the same after this function as before.

    Args:
        model: the model (eval-mode semantics are used: BatchNorm running statistics).
        example_inputs: representative inputs (the batch size you will run matters).
        threads: intra-op threads to run with; ``None`` measures ``thread_candidates``.
        config: candidates and measurement settings.
        baseline: optional model to beat (the dense original of a pruned model); it is
            optimised the same way and timed head to head against the result.

    Returns:
        ``(fast_model, report)``; ``report.candidates`` lists every candidate's latency.

    Raises:
        ConfigError: ``threads`` or a thread candidate is below 1.

    Example:
        >>> import torch
        >>> fast, rep = optimize_for_inference(torch.nn.Linear(8, 4), torch.zeros(2, 8),
        ...                                    threads=1, config=OptimizeConfig(rounds=2))
        >>> rep.chosen_ms > 0, len(rep.candidates) >= 2
        (True, True)
    """
    cfg = config or OptimizeConfig()
    thread_list = _thread_list(threads, cfg)
    previous = torch.get_num_threads()
    try:
        report, fast = _optimize(model, example_inputs, thread_list, cfg)
        if baseline is not None:
            report = _with_baseline(fast, report, baseline, example_inputs, thread_list, cfg)
    finally:
        torch.set_num_threads(previous)
    return fast, report


def _optimize(
    model: nn.Module, inputs: Inputs, thread_list: list[int], cfg: OptimizeConfig
) -> tuple[OptimizeReport, InferenceModule]:
    with eval_mode(model):
        reference = run(model, inputs)
    bound = cfg.atol + cfg.rtol * _max_abs(reference)
    first = thread_list[0]
    # The unchanged model (a copy, so the result never aliases the caller's model).
    eager = copy.deepcopy(model).eval()
    variants: dict[str, InferenceModule] = {"eager": InferenceModule(eager, threads=first)}
    results: dict[str, CandidateResult] = {}
    for name, options in _candidate_options(inputs, cfg, threads=first):
        try:
            variants[name] = build_variant(model, inputs, threads=first, **options)
        except Exception as exc:  # a model TorchScript / inductor cannot handle: skip it
            results[name] = _failed(name, first, exc)
    ok: dict[str, float] = {}
    for name, v in list(variants.items()):
        try:
            ok[name] = _max_abs_diff(run(v, inputs), reference)
        except Exception as exc:
            results[name] = _failed(name, first, exc)
            del variants[name]
    times = interleaved_times(
        {n: _caller(v, inputs) for n, v in variants.items()},
        rounds=cfg.rounds,
        warmup=cfg.warmup,
        max_seconds=cfg.max_seconds,
        settle_s=cfg.settle_s,
    )
    for name in variants:
        results[name] = CandidateResult(
            name, first, times[name].median_ms, times[name].p90_ms, ok[name], ok[name] <= bound
        )
    matching = [r for r in results.values() if r.matches]
    # "eager" always matches itself, so there is always a winner.
    best = min(matching, key=lambda r: r.median_ms).name if matching else "eager"
    candidates = list(results.values())
    chosen_threads, chosen_ms = first, results[best].median_ms
    reference_ms = results["eager"].median_ms
    if len(thread_list) > 1:
        # Thread counts are measured on the winning variant and on the reference together, so
        # the reported speedup is at the chosen thread count.
        fns = {}
        for t in thread_list:
            fns[f"{best}@{t}"] = _caller(variants[best].with_threads(t), inputs)
            fns[f"eager@{t}"] = _caller(variants["eager"].with_threads(t), inputs)
        tt = interleaved_times(
            fns,
            rounds=cfg.rounds,
            warmup=cfg.warmup,
            max_seconds=cfg.max_seconds,
            settle_s=cfg.settle_s,
        )
        for t in thread_list:
            b = tt[f"{best}@{t}"]
            candidates.append(CandidateResult(best, t, b.median_ms, b.p90_ms, ok[best], True))
        chosen_threads = min(thread_list, key=lambda t: tt[f"{best}@{t}"].median_ms)
        chosen_ms = tt[f"{best}@{chosen_threads}"].median_ms
        reference_ms = tt[f"eager@{chosen_threads}"].median_ms
    fast = variants[best].with_threads(chosen_threads)
    report = OptimizeReport(
        chosen=best,
        threads=chosen_threads,
        candidates=tuple(candidates),
        reference_ms=reference_ms,
        chosen_ms=chosen_ms,
        speedup=reference_ms / chosen_ms if chosen_ms > 0 else float("inf"),
        tolerance=bound,
    )
    return report, fast


def _with_baseline(
    fast: InferenceModule,
    report: OptimizeReport,
    baseline: nn.Module,
    inputs: Inputs,
    thread_list: list[int],
    cfg: OptimizeConfig,
) -> OptimizeReport:
    base_report, base_fast = _optimize(baseline, inputs, thread_list, cfg)
    # Head to head in one interleaved run: the two winners were timed in different runs.
    tt = interleaved_times(
        {"model": _caller(fast, inputs), "baseline": _caller(base_fast, inputs)},
        rounds=cfg.rounds,
        warmup=cfg.warmup,
        max_seconds=cfg.max_seconds,
        settle_s=cfg.settle_s,
    )
    check = compare_to_baseline(
        tt["model"].median_ms, tt["baseline"].median_ms, margin=cfg.slower_margin
    )
    loud = (check.message,) if check.slower else ()
    return OptimizeReport(
        chosen=report.chosen,
        threads=report.threads,
        candidates=report.candidates,
        reference_ms=report.reference_ms,
        chosen_ms=report.chosen_ms,
        speedup=report.speedup,
        tolerance=report.tolerance,
        baseline=check,
        baseline_report=base_report,
        warnings=report.warnings + loud,
    )


def _candidate_options(
    inputs: Inputs, cfg: OptimizeConfig, *, threads: int
) -> list[tuple[str, dict[str, Any]]]:
    fold = ["fold"] if cfg.fold_bn else []
    formats = [False, True] if cfg.channels_last and has_4d_input(inputs) else [False]
    backends = [""] + [b for b, on in _BACKENDS if getattr(cfg, on)]
    if cfg.direct and has_4d_input(inputs):
        backends.append("direct")
    out: list[tuple[str, dict[str, Any]]] = []
    for cl in formats:
        for backend in backends:
            if not cfg.fold_bn and not cl and not backend:
                continue  # identical to "eager"
            if backend in ("ort", "direct") and cl:
                continue  # both take NCHW (ORT picks its own blocked layout)
            parts = fold + (["channels_last"] if cl else []) + ([backend] if backend else [])
            options: dict[str, Any] = {
                "fold": cfg.fold_bn,
                "channels_last": cl,
                "jit": backend == "jit",
                "jit_optimize": backend == "jit_opt",
                "compile": backend == "compile",
                "compile_mode": cfg.compile_mode,
                "ort": backend == "ort",
                "direct": backend == "direct",
            }
            out.append(("+".join(parts), options))
    positional = not isinstance(inputs, Mapping)
    if cfg.split and threads > 1 and positional and _batch(inputs) >= 2:
        # Eager candidates are left out (Python between ops holds the GIL, so threads running
        # eager forwards mostly wait for each other), and so is compile (each slice's batch
        # size would recompile it).
        out += [(f"{n}+split", o | {"split": True}) for n, o in list(out) if _splits(o)]
    return out


def variant_options(name: str) -> dict[str, Any]:
    """The :func:`~torchshrink.deploy.candidates.build_variant` options of a candidate name.

    Use it to rebuild a chosen candidate, e.g. a baseline's (``report.baseline_report.chosen``).

    Raises:
        ConfigError: ``name`` has a part that is not a candidate transformation.

    Example:
        >>> variant_options("fold+channels_last+jit_opt+split")["jit_optimize"]
        True
    """
    parts = set() if name == "eager" else set(name.split("+"))
    known = {"fold", "channels_last", "jit", "jit_opt", "compile", "ort", "direct", "split"}
    unknown = parts - known
    if unknown:
        raise ConfigError(
            f"variant_options: unknown candidate part(s) {sorted(unknown)} in {name!r}"
        )
    return {
        "fold": "fold" in parts,
        "channels_last": "channels_last" in parts,
        "jit": "jit" in parts,
        "jit_optimize": "jit_opt" in parts,
        "compile": "compile" in parts,
        "ort": "ort" in parts,
        "direct": "direct" in parts,
        "split": "split" in parts,
    }


_BACKENDS = (("jit", "jit"), ("jit_opt", "jit_optimize"), ("compile", "compile"), ("ort", "ort"))


def _batch(inputs: Inputs) -> int:
    try:
        return batch_size_of(inputs)
    except TypeError:  # no tensor input: nothing to split
        return 0


def _splits(options: dict[str, Any]) -> bool:
    # Not direct: its chains already give each thread whole images.
    return any(options[k] for k in ("jit", "jit_optimize", "ort"))


def _thread_list(threads: int | None, cfg: OptimizeConfig) -> list[int]:
    if threads is not None:
        if threads < 1:
            raise ConfigError(
                f"optimize_for_inference: 'threads' must be at least 1, got {threads}"
            )
        return [threads]
    if cfg.thread_candidates is not None:
        bad = [t for t in cfg.thread_candidates if t < 1]
        if bad or not cfg.thread_candidates:
            raise ConfigError(
                "optimize_for_inference: 'thread_candidates' must be thread counts of at least "
                f"1, got {cfg.thread_candidates}"
            )
        return list(dict.fromkeys(cfg.thread_candidates))
    cores = os.cpu_count() or 1
    powers = [2**i for i in range(cores.bit_length()) if 2**i <= cores]
    return sorted({torch.get_num_threads(), *powers})


def _failed(name: str, threads: int, exc: Exception) -> CandidateResult:
    nan = math.nan
    msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return CandidateResult(name, threads, nan, nan, nan, False, error=msg[:300])


def _caller(model: nn.Module, inputs: Inputs) -> Any:
    return lambda: call_model(model, inputs)


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    if isinstance(x, (tuple, list)):
        return [t for v in x for t in _tensors(v)]
    return [t for v in getattr(x, "values", lambda: [])() for t in _tensors(v)]


def _max_abs(x: Any) -> float:
    return max((float(t.detach().abs().max()) for t in _tensors(x) if t.numel()), default=0.0)


def _max_abs_diff(out: Any, ref: Any) -> float:
    a, b = _tensors(out), _tensors(ref)
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b, strict=True)):
        return math.inf
    diffs = [
        float((x.float() - y.float()).abs().max()) for x, y in zip(a, b, strict=True) if x.numel()
    ]
    return max(diffs, default=0.0)
