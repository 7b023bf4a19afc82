"""What an ``auto`` search returns: :class:`AutoResult`, the same for both searches.

Example:
    >>> AutoResult.from_records(Path("out"), 0.9, []).budget_message(0.01)
    'auto: no trial completed; nothing to choose (run.json: None)'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AutoResult:
    """What a search (:func:`~torchshrink.auto.run_auto`, the student search) found.

    Attributes:
        out_dir: the run folder.
        run_json: its ``run.json`` (``None`` with ``search_only``).
        report_html: its ``report.html`` (``None`` with ``search_only``).
        model_path: the chosen, fine-tuned model file (``None`` if the budget was not met).
        baseline_val_accuracy: the model's own accuracy on the validation subset.
        trials: COMPLETE trials in the study.
        chosen: trial number of the chosen candidate (``None``: none within the budget).
        closest: the candidate with the smallest drop (reported when ``chosen`` is ``None``).
        closest_drop: its validation accuracy drop (fraction).
        pareto: trial numbers of the Pareto front (accuracy versus objective).
        final: test-split metrics of the chosen model after fine-tuning (else of the baseline).
        baseline: test-split metrics of the baseline.
        chosen_by: ``"promotion"`` (a promoted candidate met the budget after its full
            fine-tune), ``"search"`` (the smallest trial within the budget) or ``None``.

    Example:
        >>> recs = [{"number": 0, "accuracy": 0.8, "objective_value": 9.0, "pareto": True}]
        >>> r = AutoResult.from_records(Path("out"), 0.9, recs, closest=recs[0])
        >>> r.trials, r.chosen, r.closest, round(r.closest_drop, 3)
        (1, None, 0, 0.1)
    """

    out_dir: Path
    run_json: Path | None
    report_html: Path | None
    model_path: Path | None
    baseline_val_accuracy: float
    trials: int
    chosen: int | None
    closest: int | None
    closest_drop: float | None
    pareto: tuple[int, ...]
    final: dict[str, Any]
    baseline: dict[str, Any]
    chosen_by: str | None = None

    def budget_message(self, budget: float) -> str:
        """A one-line explanation when no candidate met ``budget``."""
        if self.closest is None:
            return f"auto: no trial completed; nothing to choose (run.json: {self.run_json})"
        return (
            f"auto: no candidate met the accuracy budget of {100 * budget:.2f} points; the "
            f"closest, trial #{self.closest}, dropped {100 * (self.closest_drop or 0):.2f} "
            f"points on the validation subset (see {self.run_json}); raise "
            "--max-accuracy-drop or run more --trials"
        )

    @classmethod
    def from_records(
        cls,
        out_dir: Path,
        base_val: float,
        records: list[dict[str, Any]],
        *,
        run_json: Path | None = None,
        html: Path | None = None,
        model_path: Path | None = None,
        final: dict[str, Any] | None = None,
        baseline: dict[str, Any] | None = None,
        chosen: dict[str, Any] | None = None,
        closest: dict[str, Any] | None = None,
        chosen_by: str | None = None,
    ) -> AutoResult:
        """The result of a search whose COMPLETE trials are ``records`` (``chosen`` and
        ``closest`` among them); with the defaults, that of a search-only run."""
        return cls(
            out_dir=out_dir,
            run_json=run_json,
            report_html=html,
            model_path=model_path,
            baseline_val_accuracy=base_val,
            trials=len(records),
            chosen=chosen["number"] if chosen else None,
            closest=closest["number"] if closest else None,
            closest_drop=base_val - closest["accuracy"] if closest else None,
            pareto=tuple(r["number"] for r in records if r["pareto"]),
            final=final or {},
            baseline=baseline or {},
            chosen_by=chosen_by,
        )
