"""Architecture search for distillation students: ``width`` / ``depth`` multipliers of a zoo
family, each candidate distilled from the teacher, under an accuracy budget.

The search uses the study, storage, lock, worker-count and resume helpers of
:mod:`torchshrink.auto.search`; candidates are scored on the same validation hold-out
(:func:`~torchshrink.auto.objective.search_data`) as ``auto``'s compression search. The
smallest candidate (by the objective) within the budget is distilled again on the whole
training split by the ``compress`` runner (one ``distill`` stage, the teacher as the recipe's
teacher) and verified once on the test split. ``run.json`` has the same ``search`` section as
``auto`` (trials, Pareto front, chosen, closest), so the report draws the front; its
``baseline`` is the teacher (measured on the test split) and ``student_init`` the undistilled
student the stage started from.

Layout of ``out_dir`` (besides what :func:`torchshrink.pipeline.runner.run_recipe` writes)::

    study.db                      the optuna study (default storage; resumable)
    search/teacher.safetensors    the teacher every candidate learns from
    trials/NNNN/model.safetensors each candidate's student

Example:
    >>> cfg = StudentConfig(teacher="zoo:lenet300", teacher_args={"input_size": 8},
    ...     student="zoo:lenet300", data="digits", train={"epochs": 2, "show_progress": False},
    ...     trials=2, val_size=200, widths=(0.1, 0.2), depths=(1.0,), max_accuracy_drop=0.5,
    ...     trial_train={"epochs": 3, "batch_size": 32, "show_progress": False}, final_train=None)
    >>> import tempfile
    >>> res = run_student_search(cfg, tempfile.mkdtemp())
    >>> res.trials, res.chosen is not None
    (2, True)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, cast

import torch

from torchshrink.auto.objective import search_data
from torchshrink.auto.run import UNITS, AutoResult, _zoo_defaults
from torchshrink.auto.search import (
    choose,
    counts,
    open_study,
    recover_stale,
    storage_url,
    study_lock,
    trial_records,
)
from torchshrink.auto.student_config import StudentConfig
from torchshrink.auto.student_space import StudentSpace, build_student_space
from torchshrink.auto.student_trial import StudentWorkerSpec, run_student_workers
from torchshrink.core.databundle import DataBundle


def run_student_search(
    config: StudentConfig, out_dir: str | Path, *, show_progress: bool = False
) -> AutoResult:
    """Search student multipliers under ``config``'s budget and build the best one.

    Resumable like :func:`torchshrink.auto.run_auto`: run it again with the same ``out_dir``
    and it tops the study up to ``config.trials`` complete trials.

    Args:
        config: what to search (see :class:`StudentConfig`).
        out_dir: the run folder (created).
        show_progress: progress display for the final recipe run.

    Returns:
        An :class:`~torchshrink.auto.AutoResult`; ``baseline`` holds the teacher's test-split
        metrics, ``final`` the chosen student's (``chosen`` is ``None`` when no candidate met
        the budget; ``budget_message`` then explains).

    Raises:
        ConfigError: a multiplier is not above 0, or the family takes no multiplier.
        MissingDependencyError: optuna is not installed (extra ``search``).

    Example:
        See the module docstring.
    """
    import torchshrink
    from torchshrink.measure.accuracy import evaluate

    space = build_student_space(config.student, widths=config.widths, depths=config.depths)
    out = Path(out_dir)
    (out / "search").mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        data = torchshrink.load_data(config.data, seed=config.seed, limit=config.data_limit)
        sdata = search_data(
            data, val_size=config.val_size, train_size=config.search_train_size, seed=config.seed
        )
        teacher_path = out / "search" / "teacher.safetensors"
        if teacher_path.is_file():  # resume: every candidate must learn from the same teacher
            teacher = torchshrink.load(teacher_path)
        else:
            teacher = _build_teacher(config, data)
            tmp = torchshrink.save(teacher, out / "search" / "teacher.tmp.safetensors")
            os.replace(tmp, teacher_path)
        base_val = evaluate(teacher.eval(), sdata.loader("test", batch_size=256)).accuracy
        url = storage_url(cast(Any, config), out)  # reads only ``config.storage``
        with study_lock(out):
            study = open_study(url, config.study_name, seed=config.seed)
            if "space" not in study.user_attrs:
                study.set_user_attr("space", space.to_dict())
                study.set_user_attr("mode", "student")
                study.set_user_attr("baseline_val_accuracy", base_val)
                fixed = {**_zoo_defaults(config.student, data), **config.student_args}
                study.set_user_attr("student_args", fixed)
                for point in space.starting_points(min(config.trials, space.size)):
                    study.enqueue_trial(point, user_attrs={"seeded": True})
            space = StudentSpace.from_dict(study.user_attrs["space"])
            base_val = float(study.user_attrs["baseline_val_accuracy"])
            recover_stale(study, all_running=config.storage is None, stale_after=config.stale_after)
        spec = StudentWorkerSpec(
            config_json=config.model_dump_json(),
            out_dir=str(out),
            storage=url,
            study_name=config.study_name,
            teacher_path=str(teacher_path),
            index=0,
        )
        run_student_workers(spec, config.workers)
        records = trial_records(study)
        if config.search_only:
            return _result(out, None, None, base_val, records, None, {}, {})
        return _finish(config, out, study, space, base_val, teacher_path, data, show_progress)
    finally:
        torch.set_num_threads(threads)


def _build_teacher(config: StudentConfig, data: DataBundle) -> torch.nn.Module:
    import torchshrink

    torch.manual_seed(config.seed)
    args = {**_zoo_defaults(config.teacher, data), **config.teacher_args}
    teacher = torchshrink.load_model(config.teacher, model_args=args or None)
    if config.train is not None:
        # The validation part stays unseen by the teacher too: its accuracy there is the
        # reference the students' drops are measured against.
        fit = search_data(data, val_size=config.val_size, train_size=None, seed=config.seed)
        torchshrink.train(teacher, fit, config.train)
    return teacher


def _finish(
    config: StudentConfig,
    out: Path,
    study: Any,
    space: StudentSpace,
    base_val: float,
    teacher_path: Path,
    data: DataBundle,
    show_progress: bool,
) -> AutoResult:
    import torchshrink
    from torchshrink.pipeline.recipe import recipe_from_dict
    from torchshrink.pipeline.runner import _paired_latency, run_recipe, write_json
    from torchshrink.report.html import render_report

    records = trial_records(study)
    budget = config.max_accuracy_drop
    chosen, closest = choose(records, base_val, budget)
    multipliers = space.model_args(chosen["params"] if chosen else _first_params(space))
    args = {**study.user_attrs["student_args"], **multipliers}
    train = config.final_train or config.trial_train
    recipe = recipe_from_dict(
        {
            "name": f"auto student ({config.objective})",
            "model": config.student,
            "model_args": args,
            "teacher": str(teacher_path),
            "data": config.data,
            "data_limit": config.data_limit,
            "seed": config.seed,
            "profile_repeats": config.latency_repeats,
            "stages": [
                {
                    "kind": "distill",
                    "config": config.distill.model_dump(mode="json"),
                    "train": train.model_dump(mode="json"),
                }
            ],
        },
        source="auto --student",
    )
    teacher_profile = _profile(teacher_path, data, config.latency_repeats)
    model_path: Path | None = None
    if chosen is not None:
        rec = run_recipe(recipe, out, show_progress=show_progress, report=False)
        doc = json.loads(rec.run_json.read_text(encoding="utf-8"))
        model_path = rec.model_path
        # The report reads baseline -> final: for a student that is teacher -> student.
        doc["student_init"] = doc["baseline"]
        final = torchshrink.load(rec.model_path).eval()
        doc["latency_vs_baseline"] = _paired_latency(teacher_path, final, data, recipe)
    else:
        doc = {"recipe": recipe.model_dump(mode="json", by_alias=True), "stages": [],
               "final": teacher_profile, "model_path": None}  # fmt: skip
    doc["baseline"] = teacher_profile
    doc["teacher_path"] = str(teacher_path)
    c = counts(study)
    doc["search"] = {
        "mode": "student",
        "family": space.family,
        "objective": config.objective,
        "objective_unit": UNITS[config.objective],
        "budget": budget,
        "baseline_val_accuracy": base_val,
        "trials": records,
        "chosen": chosen["number"] if chosen else None,
        "chosen_by": "search" if chosen else None,
        "chosen_args": args if chosen else None,
        "closest": closest["number"] if closest else None,
        "failed_trials": c.get("FAIL", 0),
        "failures": _failures(study),
        "study": config.study_name,
        "storage": storage_url(cast(Any, config), out),
        "space": space.to_dict(),
        "config": config.model_dump(mode="json"),
    }
    run_json = out / "run.json"
    write_json(run_json, doc)
    html = render_report(run_json)
    return _result(
        out, run_json, html, base_val, records, model_path, doc["final"], teacher_profile,
        chosen=doc["search"]["chosen"], closest=closest,
    )  # fmt: skip


def _failures(study: Any) -> list[dict[str, Any]]:
    # Why candidates failed (e.g. a diverging distillation), so the message can say it.
    return [
        {"number": t.number, "params": dict(t.params), "error": t.user_attrs["error"]}
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "FAIL" and "error" in t.user_attrs
    ]


def _first_params(space: StudentSpace) -> dict[str, float]:
    # No candidate chosen: the recipe recorded in run.json still names a valid student.
    return {k: v[0] for k, v in space.axes.items()}


def _profile(path: Path, data: DataBundle, repeats: int) -> dict[str, Any]:
    import torchshrink
    from torchshrink.measure.profile import profile

    model = torchshrink.load(path).eval()
    x = data.example_inputs(1)  # (1, *input_shape)
    prof = profile(model, x, data=data, repeats=repeats, file_path=path).to_dict()
    prof.pop("latency_samples_ms", None)
    return prof


def _result(
    out: Path,
    run_json: Path | None,
    html: Path | None,
    base_val: float,
    records: list[dict[str, Any]],
    model_path: Path | None,
    final: dict[str, Any],
    baseline: dict[str, Any],
    *,
    chosen: int | None = None,
    closest: dict[str, Any] | None = None,
) -> AutoResult:
    return AutoResult(
        out_dir=out,
        run_json=run_json,
        report_html=html,
        model_path=model_path,
        baseline_val_accuracy=base_val,
        trials=len(records),
        chosen=chosen,
        closest=closest["number"] if closest else None,
        closest_drop=base_val - closest["accuracy"] if closest else None,
        pareto=tuple(r["number"] for r in records if r["pareto"]),
        final=final,
        baseline=baseline,
        chosen_by="search" if chosen is not None else None,
    )
