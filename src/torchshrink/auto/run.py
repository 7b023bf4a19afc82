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

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from torchshrink.auto.config import AutoConfig
from torchshrink.auto.objective import search_data, with_distill
from torchshrink.auto.promote import promote
from torchshrink.auto.search import (
    WorkerSpec,
    choose,
    counts,
    open_study,
    recover_stale,
    run_workers,
    storage_url,
    study_lock,
    trial_records,
)
from torchshrink.auto.space import SearchSpace, build_space
from torchshrink.core.errors import TorchshrinkError

UNITS = {"size": "bytes", "latency": "ms", "energy": "mJ/sample"}


class BudgetNotMetError(TorchshrinkError):
    """No candidate met the accuracy budget (exit code 3; run.json is still written)."""

    exit_code = 3


@dataclass(frozen=True)
class AutoResult:
    """What :func:`run_auto` found.

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
    import torchshrink
    from torchshrink.measure.accuracy import evaluate

    out = Path(out_dir)
    (out / "search").mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        data = torchshrink.load_data(config.data, seed=config.seed, limit=config.data_limit)
        baseline_path = out / "search" / "baseline.safetensors"
        if baseline_path.is_file():  # resume: every trial must start from the same model
            model = torchshrink.load(baseline_path)
        else:
            torch.manual_seed(config.seed)
            args = {**_zoo_defaults(config.model, data), **config.model_args}
            model = torchshrink.load_model(config.model, model_args=args or None)
            if config.train is not None:  # without the hold-out: it must stay unseen
                fit = search_data(data, val_size=config.val_size, train_size=None, seed=config.seed)
                torchshrink.train(model, fit, config.train)
            tmp = torchshrink.save(model, out / "search" / "baseline.tmp.safetensors")
            os.replace(tmp, baseline_path)
        sdata = search_data(
            data, val_size=config.val_size, train_size=config.search_train_size, seed=config.seed
        )
        base_val = evaluate(model.eval(), sdata.loader("test", batch_size=256)).accuracy
        url = storage_url(config, out)
        with study_lock(out):
            study = open_study(url, config.study_name, seed=config.seed)
            if "space" not in study.user_attrs:
                space = build_space(model, sdata, config)
                study.set_user_attr("space", space.to_dict())
                study.set_user_attr("baseline_val_accuracy", base_val)
                _seed_trials(study, space, limit=config.trials, weights=_weights(model))
            space = SearchSpace.from_dict(study.user_attrs["space"])
            base_val = float(study.user_attrs["baseline_val_accuracy"])
            recover_stale(study, all_running=config.storage is None, stale_after=config.stale_after)
        spec = WorkerSpec(
            config_json=config.model_dump_json(),
            out_dir=str(out),
            storage=url,
            study_name=config.study_name,
            baseline_path=str(baseline_path),
            index=0,
        )
        run_workers(spec, config.workers)
        if config.search_only:
            return _search_only(out, study, base_val)
        return _finish(config, out, study, space, base_val, baseline_path, data, show_progress)
    finally:
        torch.set_num_threads(threads)


def _zoo_defaults(model_ref: str, data: Any) -> dict[str, Any]:
    # A zoo model is sized for the data (classes, channels, square input), as the CLI does.
    if not model_ref.startswith("zoo:"):
        return {}
    out: dict[str, Any] = {"num_classes": data.num_classes} if data.num_classes else {}
    shape = tuple(data.input_shape)
    if len(shape) == 3 and shape[1] == shape[2]:
        out.update(in_channels=shape[0], input_size=shape[1])
    return out


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


def _finish(
    config: AutoConfig,
    out: Path,
    study: Any,
    space: SearchSpace,
    base_val: float,
    baseline_path: Path,
    data: Any,
    show_progress: bool,
) -> AutoResult:
    from torchshrink.pipeline.recipe import recipe_from_dict
    from torchshrink.pipeline.runner import run_recipe

    records = trial_records(study)
    budget = config.max_accuracy_drop
    chosen, closest = choose(records, base_val, budget)
    promoted = promote(
        config, out, study, space, records, base_val=base_val, baseline_path=baseline_path,
        data=data,
    )  # fmt: skip
    passed = [p for p in promoted if p.within_budget]
    if passed:  # smaller than the in-budget trials by construction; the smallest wins
        best = min(passed, key=lambda p: (p.objective_value, -p.accuracy))
        chosen = next(r for r in records if r["number"] == best.number)
    recipe = recipe_from_dict(
        {
            "name": f"auto ({config.objective})",
            "model": str(baseline_path),
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
        rec = run_recipe(recipe, out, show_progress=show_progress, report=False)
        doc = json.loads(rec.run_json.read_text(encoding="utf-8"))
        model_path = rec.model_path
    else:
        doc = _baseline_only(recipe, baseline_path, data, config)
    c = counts(study)
    doc["search"] = {
        "objective": config.objective,
        "objective_unit": UNITS[config.objective],
        "budget": budget,
        "baseline_val_accuracy": base_val,
        "trials": records,
        "chosen": chosen["number"] if chosen else None,
        "chosen_by": "promotion" if passed else ("search" if chosen else None),
        "distill": config.distill.model_dump(mode="json") if config.distill else None,
        "promotion": {
            "slack": config.promote_slack,
            "max_candidates": config.promote,
            "candidates": [asdict(p) for p in promoted],
        },
        "closest": closest["number"] if closest else None,
        "failed_trials": c.get("FAIL", 0),
        "study": config.study_name,
        "storage": storage_url(config, out),
        "space": space.to_dict(),
        "config": config.model_dump(mode="json"),
    }
    run_json = out / "run.json"
    from torchshrink.pipeline.runner import write_json

    write_json(run_json, doc)
    from torchshrink.report.html import render_report

    html = render_report(run_json)
    return AutoResult(
        out_dir=out,
        run_json=run_json,
        report_html=html,
        model_path=model_path,
        baseline_val_accuracy=base_val,
        trials=len(records),
        chosen=doc["search"]["chosen"],
        closest=doc["search"]["closest"],
        closest_drop=base_val - closest["accuracy"] if closest else None,
        pareto=tuple(r["number"] for r in records if r["pareto"]),
        final=doc["final"],
        baseline=doc["baseline"],
        chosen_by=doc["search"]["chosen_by"],
    )


def _search_only(out: Path, study: Any, base_val: float) -> AutoResult:
    records = trial_records(study)
    return AutoResult(
        out_dir=out,
        run_json=None,
        report_html=None,
        model_path=None,
        baseline_val_accuracy=base_val,
        trials=len(records),
        chosen=None,
        closest=None,
        closest_drop=None,
        pareto=tuple(r["number"] for r in records if r["pareto"]),
        final={},
        baseline={},
    )


def _profile(model: Any, file_path: Path, data: Any, config: AutoConfig) -> dict[str, Any]:
    from torchshrink.measure.profile import profile

    x = data.example_inputs(1)  # (1, *input_shape)
    prof = profile(model, x, data=data, repeats=config.latency_repeats, file_path=file_path)
    doc = prof.to_dict()
    doc.pop("latency_samples_ms", None)
    return doc


def _baseline_only(recipe: Any, baseline_path: Path, data: Any, config: AutoConfig) -> dict:
    # No candidate to build: the record holds the baseline (measured on the test split) only.
    import torchshrink
    from torchshrink.pipeline.runner import _machine, _versions

    prof = _profile(torchshrink.load(baseline_path), baseline_path, data, config)
    return {
        "recipe": recipe.model_dump(mode="json", by_alias=True),
        "baseline": prof,
        "stages": [],
        "final": prof,
        "model_path": None,
        "versions": _versions(),
        "machine": _machine(),
    }
