"""What :func:`~torchshrink.deploy.optimize.optimize_for_inference` measured and chose.

Also the "never slower than the dense model" check: :func:`compare_to_baseline` compares the
optimised model with its optimised baseline (the dense model it was pruned from) and, when the
model is slower, warns with :class:`SlowerThanBaselineWarning` and marks the report, so that a
pruning that does not pay is never reported as a success.

Example:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     check = compare_to_baseline(12.0, 10.0)
    >>> check.slower, round(check.speedup, 2), caught[0].category.__name__
    (True, 0.83, 'SlowerThanBaselineWarning')
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass


class SlowerThanBaselineWarning(UserWarning):
    """The optimised model runs slower than its optimised baseline (e.g. the dense model)."""


@dataclass(frozen=True)
class CandidateResult:
    """One measured inference variant.

    Attributes:
        name: the transformations applied, e.g. ``"fold+channels_last+jit"``.
        threads: intra-op threads it ran with.
        median_ms: median latency over interleaved rounds (``nan`` if it failed to build).
        p90_ms: 90th percentile latency.
        max_abs_diff: largest absolute difference to the reference output.
        matches: ``max_abs_diff`` is within the tolerance; only matching variants are chosen.
        error: why the variant could not be built or run, else ``None``.
    """

    name: str
    threads: int
    median_ms: float
    p90_ms: float
    max_abs_diff: float
    matches: bool
    error: str | None = None


@dataclass(frozen=True)
class BaselineCheck:
    """The optimised model against its optimised baseline, timed head to head.

    Attributes:
        model_ms: median latency of the optimised model.
        baseline_ms: median latency of the optimised baseline.
        speedup: ``baseline_ms / model_ms`` (above 1: the model is faster).
        slower: the model is slower than the baseline by more than the allowed margin.
        message: a one-line verdict; starts with ``"SLOWER"`` when ``slower``.
    """

    model_ms: float
    baseline_ms: float
    speedup: float
    slower: bool
    message: str


@dataclass(frozen=True)
class OptimizeReport:
    """Every candidate's latency and which one was chosen.

    Attributes:
        chosen: name of the chosen candidate.
        threads: intra-op threads of the chosen candidate.
        candidates: every candidate measured, in measurement order (thread variants included).
        reference_ms: median latency of the unchanged model (``"eager"``) at the chosen
            thread count, from the same interleaved run.
        chosen_ms: median latency of the chosen candidate.
        speedup: ``reference_ms / chosen_ms``.
        tolerance: the output bound used, ``atol + rtol * max|reference|``.
        baseline: the never-slower check, when a baseline was given.
        baseline_report: how the baseline itself was optimised, when one was given.
        warnings: loud messages (e.g. slower than the baseline); empty when all is well.
    """

    chosen: str
    threads: int
    candidates: tuple[CandidateResult, ...]
    reference_ms: float
    chosen_ms: float
    speedup: float
    tolerance: float
    baseline: BaselineCheck | None = None
    baseline_report: OptimizeReport | None = None
    warnings: tuple[str, ...] = ()


def compare_to_baseline(
    model_ms: float, baseline_ms: float, *, margin: float = 0.0, name: str = "model"
) -> BaselineCheck:
    """Check that ``model_ms`` is not slower than ``baseline_ms``; warn loudly if it is.

    Args:
        model_ms: median latency of the (pruned, optimised) model.
        baseline_ms: median latency of the (dense, optimised the same way) baseline.
        margin: relative slack before calling it slower (``0.05``: up to 5% slower passes),
            for machines too noisy to resolve small differences.
        name: what to call the model in the message.

    Returns:
        The verdict; when slower, a :class:`SlowerThanBaselineWarning` has been issued.

    Example:
        >>> compare_to_baseline(5.0, 10.0).speedup
        2.0
    """
    speedup = baseline_ms / model_ms if model_ms > 0 else float("inf")
    slower = model_ms > baseline_ms * (1.0 + margin)
    if slower:
        message = (
            f"SLOWER: the optimised {name} takes {model_ms:.2f} ms, the optimised baseline "
            f"{baseline_ms:.2f} ms ({speedup:.2f}x); removing channels made it slower, keep the "
            "baseline or prune differently (fewer, rounded or whole-layer removals)"
        )
        warnings.warn(message, SlowerThanBaselineWarning, stacklevel=2)
    else:
        message = (
            f"ok: the optimised {name} takes {model_ms:.2f} ms, the optimised baseline "
            f"{baseline_ms:.2f} ms ({speedup:.2f}x faster)"
        )
    return BaselineCheck(
        model_ms=model_ms,
        baseline_ms=baseline_ms,
        speedup=speedup,
        slower=slower,
        message=message,
    )
