"""``run_auto``: baseline, sensitivity-bounded space, search, then the chosen candidate built,
fine-tuned and verified on the test split in the same run folder ``compress`` writes.

Layout of ``out_dir`` (besides what :func:`torchshrink.pipeline.runner.run_recipe` writes)::

    study.db                       the optuna study (default storage; resumable)
    search/baseline.safetensors    the trained model every candidate starts from
    trials/NNNN/                   each candidate's files (its coded model file for ``size``)
    run.json                       compress's record plus ``search`` (trials, Pareto, chosen)

Example:
    >>> cfg = AutoConfig(model="zoo:lenet300", model_args={"input_size": 8}, data="digits",
    ...     train={"epochs": 2, "show_progress": False}, trials=2, val_size=200,
    ...     max_accuracy_drop=0.5, ratios=(0.5,), bits=(0, 4), final_finetune=None)
    >>> res = run_auto(cfg, "/tmp/auto_doc")
    >>> res.trials, res.chosen is not None
    (2, True)
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from torchshrink.auto import flow
from torchshrink.auto.config import AutoConfig
from torchshrink.auto.objective import with_distill
from torchshrink.auto.promote import promote
from torchshrink.auto.result import AutoResult
from torchshrink.auto.search import choose, run_workers, trial_records
from torchshrink.auto.space import SearchSpace, build_space
from torchshrink.core.errors import TorchshrinkError

__all__ = ["AutoResult", "BudgetNotMetError", "run_auto"]


class BudgetNotMetError(TorchshrinkError):
    """No candidate met the accuracy budget (exit code 3; run.json is still written)."""

    exit_code = 3


def run_auto(config: AutoConfig, out_dir: str | Path, *, show_progress: bool = False) -> AutoResult:
    """Search per-layer compression under ``config``'s accuracy budget and build the best.

    Resumable: run it again with the same ``out_dir`` (and storage) and it tops the study up
    to ``config.trials`` complete trials, re-running trials a killed run left unfinished.

    Args:
        config: what to search (see :class:`AutoConfig`).
        out_dir: the run folder (created).
        show_progress: progress display for the final recipe run.

    Raises:
        MissingDependencyError: optuna is not installed (extra ``search``).
        TorchshrinkError: a worker process died.

    Example:
        See the module docstring.
    """

    def init_study(study: Any, model: Any, sdata: Any) -> None:
        space = build_space(model, sdata, config)
        study.set_user_attr("space", space.to_dict())
        _seed_trials(study, space, limit=config.trials, weights=_weights(model))

    with flow.torch_threads(config.threads):
        start = flow.start_search(
            config, out_dir, model_ref=config.model, model_args=config.model_args,
            file_stem="baseline", init_study=init_study,
        )  # fmt: skip
        run_workers(flow.worker_spec(config, start), config.workers)
        if config.search_only:
            return AutoResult.from_records(start.out, start.base_val, trial_records(start.study))
        return _finish(config, start, show_progress)


def _weights(model: Any) -> dict[str, int]:
    # weights per module name (what a layer's pruning ratio and codebook act on)
    return {n: m.weight.numel() for n, m in model.named_modules() if hasattr(m, "weight")}


def _seed_trials(
    study: Any, space: SearchSpace, *, limit: int, weights: dict[str, int] | None = None
) -> None:
    # Sensitivity-guided starting points. Uniform ones (every layer at a fraction of its
    # bound) and, as Deep Compression found for LeNet-5 (first conv 66% kept, big FC 8%),
    # weight-share ones: layers holding >= 5% of the weights one grid step below their bound
    # (the bound itself wrecks accuracy at a short fine-tune), small layers at half of it
    # (they cost few bytes, and the first / last layers are the most sensitive).
    # At most ``limit`` of them: an enqueued trial left over would wait in the study forever.
    weights = weights or {}
    total = sum(weights.values()) or 1
    seeds = (("share", 4), ("uniform", 0.5, 6), ("share", 5), ("uniform", 0.8, 5))
    for seed in seeds[:limit]:
        params: dict[str, Any] = {}
        for layer, choices in space.ratios.items():
            grid = sorted(choices)
            if seed[0] == "uniform":
                target = seed[1] * grid[-1]
            elif weights.get(layer.partition(":")[0], 0) >= 0.05 * total:
                target = grid[max(len(grid) - 2, 0)]
            else:
                target = 0.5 * grid[-1]
            params[f"prune:{layer}"] = min(grid, key=lambda r: abs(r - target))
        for layer, choices in space.bits.items():
            params[f"bits:{layer}"] = min(choices, key=lambda b: abs(b - seed[-1]))
        study.enqueue_trial(params, user_attrs={"seeded": True})


def _finish(config: AutoConfig, start: flow.SearchStart, show_progress: bool) -> AutoResult:
    from torchshrink.pipeline.recipe import recipe_from_dict

    space = SearchSpace.from_dict(start.study.user_attrs["space"])
    records = trial_records(start.study)
    chosen, closest = choose(records, start.base_val, config.max_accuracy_drop)
    promoted = promote(
        config, start.out, start.study, space, records, base_val=start.base_val,
        baseline_path=start.model_path, data=start.data,
    )  # fmt: skip
    passed = [p for p in promoted if p.within_budget]
    if passed:  # smaller than the in-budget trials by construction; the smallest wins
        best = min(passed, key=lambda p: (p.objective_value, -p.accuracy))
        chosen = next(r for r in records if r["number"] == best.number)
    recipe = recipe_from_dict(
        {
            "name": f"auto ({config.objective})",
            "model": str(start.model_path),
            "data": config.data,
            "data_limit": config.data_limit,
            "seed": config.seed,
            "profile_repeats": config.latency_repeats,
            # with ``distill`` the prune stages distil from the baseline, as in the search
            "stages": with_distill(
                space.stages(
                    chosen["params"] if chosen else {},
                    finetune=config.final_finetune,
                    centroid_finetune=config.centroid_finetune,
                    agp=config.agp,
                ),
                config.distill,
            ),
        },
        source="auto",
    )
    model_path: Path | None = None
    if chosen is not None:
        doc, model_path = flow.run_chosen(recipe, start.out, show_progress=show_progress)
    else:
        doc = _baseline_only(recipe, start, config)
    extra = {
        "distill": config.distill.model_dump(mode="json") if config.distill else None,
        "promotion": {
            "slack": config.promote_slack,
            "max_candidates": config.promote,
            "candidates": [asdict(p) for p in promoted],
        },
    }
    return flow.finish_search(
        config, start, doc, space=space, records=records, chosen=chosen, closest=closest,
        chosen_by="promotion" if passed else ("search" if chosen else None),
        model_path=model_path, extra=extra,
    )  # fmt: skip


def _baseline_only(recipe: Any, start: flow.SearchStart, config: AutoConfig) -> dict:
    # No candidate to build: the record holds the baseline (measured on the test split) only.
    from torchshrink.pipeline.runner import _machine, _versions

    prof = flow.profile_file(start.model_path, start.data, repeats=config.latency_repeats)
    return {
        "recipe": recipe.model_dump(mode="json", by_alias=True),
        "baseline": prof,
        "stages": [],
        "final": prof,
        "model_path": None,
        "versions": _versions(),
        "machine": _machine(),
    }
