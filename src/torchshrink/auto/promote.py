"""Candidate promotion: the search's most promising small candidates get the full fine-tune.

A trial is fine-tuned briefly on a small training subset, which under-rates very sparse
candidates (they need the longest fine-tune). So after the search a few Pareto candidates whose
search-time drop is within ``max_accuracy_drop + promote_slack`` and whose objective is below
that of the best in-budget trial are rebuilt with ``final_finetune`` on the search-training
part (never the validation part) and re-scored on the validation part, smallest first; the
first that then meets the budget is chosen (a larger one could not win, so the rest are not
built). The test split is still used once, on the chosen one.

Results are kept in the study (user attribute ``promoted:<number>``): a resumed run does not
fine-tune them again.

Example:
    >>> recs = [{"number": i, "accuracy": a, "objective_value": o, "pareto": True}
    ...         for i, a, o in [(0, 0.99, 900.0), (1, 0.97, 300.0), (2, 0.9, 100.0)]]
    >>> [r["number"] for r in select_for_promotion(recs, 0.99, budget=0.005, slack=0.03, k=3)]
    [1]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torchshrink.auto.config import AutoConfig
from torchshrink.auto.objective import search_data
from torchshrink.auto.search import evaluate_params
from torchshrink.auto.space import SearchSpace
from torchshrink.core.databundle import DataBundle


@dataclass(frozen=True)
class Promotion:
    """One promoted candidate after its full fine-tune.

    Attributes:
        number: the trial it was promoted from.
        search_accuracy: that trial's validation accuracy after the short fine-tune.
        accuracy: validation accuracy after the full fine-tune.
        drop: ``baseline_val_accuracy - accuracy``.
        objective_value: the objective after the full fine-tune.
        file_bytes: bytes of its model file.
        within_budget: ``drop <= max_accuracy_drop``.
        seconds: wall time to build and measure it.
    """

    number: int
    search_accuracy: float
    accuracy: float
    drop: float
    objective_value: float
    file_bytes: int
    within_budget: bool
    seconds: float


def select_for_promotion(
    records: list[dict[str, Any]], base_val: float, *, budget: float, slack: float, k: int
) -> list[dict[str, Any]]:
    """The ``k`` smallest Pareto trials worth a full fine-tune, smallest objective first.

    The pool is the Pareto trials with a search-time drop within ``budget + slack`` and an
    objective below the best in-budget trial's (a larger one could not be chosen).
    """
    if k <= 0:
        return []
    ok = [r for r in records if base_val - r["accuracy"] <= budget + 1e-12]
    limit = min((r["objective_value"] for r in ok), default=float("inf"))
    pool = sorted(
        (
            r
            for r in records
            if r["pareto"]
            and base_val - r["accuracy"] <= budget + slack + 1e-12
            and r["objective_value"] < limit
        ),
        key=lambda r: r["objective_value"],
    )
    return pool[:k]


def promote(
    config: AutoConfig,
    out: Path,
    study: Any,
    space: SearchSpace,
    records: list[dict[str, Any]],
    *,
    base_val: float,
    baseline_path: Path,
    data: DataBundle,
) -> list[Promotion]:
    """Give the candidates :func:`select_for_promotion` picks the full fine-tune; score them.

    Smallest first, stopping after the first that meets the budget. Nothing is promoted
    without a ``final_finetune`` (the final model would not get one).
    """
    if config.final_finetune is None:
        return []
    picked = select_for_promotion(
        records,
        base_val,
        budget=config.max_accuracy_drop,
        slack=config.promote_slack,
        k=config.promote,
    )
    if not picked:
        return []
    pdata = search_data(
        data, val_size=config.val_size, train_size=config.promote_train_size, seed=config.seed
    )
    out_list = []
    for rec in picked:
        key = f"promoted:{rec['number']}"
        if key in study.user_attrs:  # a resumed run: already fine-tuned
            out_list.append(Promotion(**study.user_attrs[key]))
            if out_list[-1].within_budget:
                break
            continue
        res = evaluate_params(
            config, space, rec["params"], baseline_path, pdata,
            finetune=config.final_finetune, work_dir=out / "promoted" / f"{rec['number']:04d}",
        )  # fmt: skip
        drop = base_val - res.accuracy
        p = Promotion(
            number=int(rec["number"]),
            search_accuracy=float(rec["accuracy"]),
            accuracy=res.accuracy,
            drop=drop,
            objective_value=res.objective_value,
            file_bytes=res.file_bytes,
            within_budget=drop <= config.max_accuracy_drop + 1e-12,
            seconds=res.seconds,
        )
        study.set_user_attr(key, asdict(p))
        out_list.append(p)
        if p.within_budget:  # the smallest that passes: larger ones cannot be chosen
            break
    return out_list
