"""Candidate promotion: which trials get the full fine-tune, and how the result is chosen."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from torchshrink.auto import run_auto
from torchshrink.auto.promote import select_for_promotion


def _recs(points: list[tuple[int, float, float, bool]]) -> list[dict]:
    return [
        {"number": n, "accuracy": a, "objective_value": o, "pareto": p} for n, a, o, p in points
    ]


def test_select_takes_small_pareto_trials_within_the_slack() -> None:
    recs = _recs(
        [
            (0, 0.990, 900.0, True),  # within budget: the limit
            (1, 0.975, 300.0, True),  # drop 1.5 points: within budget + slack
            (2, 0.970, 250.0, True),
            (3, 0.960, 200.0, True),  # drop 3 points: beyond the slack
            (4, 0.970, 400.0, False),  # dominated
            (5, 0.992, 1000.0, True),  # larger than the limit
        ]
    )
    picked = select_for_promotion(recs, 0.99, budget=0.005, slack=0.02, k=3)
    assert [r["number"] for r in picked] == [2, 1]
    assert select_for_promotion(recs, 0.99, budget=0.005, slack=0.02, k=0) == []
    # no in-budget trial: no limit, the pool is only bounded by the slack
    assert [r["number"] for r in select_for_promotion(recs[1:4], 0.99, budget=0.0, slack=0.02, k=5)] == [2, 1]  # fmt: skip


def test_select_takes_the_k_smallest_of_a_large_pool() -> None:
    recs = _recs([(i, 0.98, 100.0 * (i + 1), True) for i in range(7)])
    picked = select_for_promotion(recs, 0.98, budget=0.0, slack=0.0, k=3)
    # every trial is within budget: only those below the smallest (none) could be promoted
    assert picked == []
    picked = select_for_promotion(recs, 0.99, budget=0.0, slack=0.02, k=3)
    assert [r["number"] for r in picked] == [0, 1, 2]
    assert [r["number"] for r in select_for_promotion(recs, 0.99, budget=0.0, slack=0.02, k=1)] == [0]  # fmt: skip


@pytest.mark.integration
def test_promoted_candidates_are_recorded_and_the_smallest_passing_is_chosen(  # type: ignore[no-untyped-def]
    tmp_path: Path, tiny_config
) -> None:
    cfg = tiny_config(
        trials=3,
        max_accuracy_drop=0.01,  # the smallest trial misses it: it is promoted
        ratios=(0.5, 0.9, 0.97),
        bits=(0, 2, 4),
        final_finetune={"epochs": 1, "lr": 0.02, "show_progress": False},
        promote=2,
        promote_slack=0.9,  # every Pareto trial below the in-budget one qualifies
        data_limit=700,
    )
    res = run_auto(cfg, tmp_path)
    search = json.loads((tmp_path / "run.json").read_text())["search"]
    trials = {t["number"]: t for t in search["trials"]}
    ok = [t for t in trials.values() if res.baseline_val_accuracy - t["accuracy"] <= 0.01 + 1e-9]
    limit = min((t["objective_value"] for t in ok), default=float("inf"))
    promo = search["promotion"]["candidates"]
    assert 1 <= len(promo) <= 2 and search["promotion"]["max_candidates"] == 2
    for p in promo:
        t = trials[p["number"]]
        assert t["pareto"] and t["objective_value"] < limit
        assert p["search_accuracy"] == t["accuracy"]
        assert abs(p["drop"] - (res.baseline_val_accuracy - p["accuracy"])) < 1e-9
        assert p["within_budget"] == (p["drop"] <= 0.01 + 1e-9)
        assert (tmp_path / "promoted" / f"{p['number']:04d}").is_dir()
    sizes = [p["objective_value"] for p in promo]
    assert sizes == sorted(sizes)  # smallest first
    passed = [p for p in promo if p["within_budget"]]
    assert passed in ([], promo[-1:])  # stops at the first that meets the budget
    if passed:
        assert res.chosen_by == "promotion"
        assert res.chosen == min(passed, key=lambda p: p["objective_value"])["number"]
    else:
        assert res.chosen_by == "search"
        assert trials[res.chosen]["objective_value"] == limit
    # kept in the study: a resumed run reuses them instead of fine-tuning again
    study = optuna.load_study(study_name=cfg.study_name, storage=f"sqlite:///{tmp_path}/study.db")
    for p in promo:
        assert study.user_attrs[f"promoted:{p['number']}"] == p
