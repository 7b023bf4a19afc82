"""Architecture search for distillation students: ``width`` / ``depth`` multipliers of a zoo
family, each candidate distilled from the teacher, under an accuracy budget.

Around its trials the search takes the steps of ``auto``'s compression search
(:mod:`torchshrink.auto.flow`: data, start model, study, resume, workers, run.json), and its
candidates are scored on the same validation hold-out
(:func:`~torchshrink.auto.objective.search_data`). The
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

from pathlib import Path
from typing import Any

from torchshrink.auto import flow
from torchshrink.auto.result import AutoResult
from torchshrink.auto.search import choose, run_workers, trial_records
from torchshrink.auto.student_config import StudentConfig
from torchshrink.auto.student_space import StudentSpace, build_student_space
from torchshrink.auto.student_trial import student_work
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
    space = build_student_space(config.student, widths=config.widths, depths=config.depths)

    def init_study(study: Any, teacher: Any, sdata: DataBundle) -> None:
        study.set_user_attr("space", space.to_dict())
        study.set_user_attr("mode", "student")
        fixed = {**flow.zoo_defaults(config.student, sdata), **config.student_args}
        study.set_user_attr("student_args", fixed)
        for point in space.starting_points(min(config.trials, space.size)):
            study.enqueue_trial(point, user_attrs={"seeded": True})

    with flow.torch_threads(config.threads):
        start = flow.start_search(
            config, out_dir, model_ref=config.teacher, model_args=config.teacher_args,
            file_stem="teacher", init_study=init_study,
        )  # fmt: skip
        run_workers(
            flow.worker_spec(config, start),
            config.workers,
            target=student_work,
            label="auto --student",
        )
        if config.search_only:
            return AutoResult.from_records(start.out, start.base_val, trial_records(start.study))
        return _finish(config, start, show_progress)


def _finish(config: StudentConfig, start: flow.SearchStart, show_progress: bool) -> AutoResult:
    import torchshrink
    from torchshrink.pipeline.recipe import recipe_from_dict
    from torchshrink.pipeline.runner import _paired_latency

    space = StudentSpace.from_dict(start.study.user_attrs["space"])
    records = trial_records(start.study)
    chosen, closest = choose(records, start.base_val, config.max_accuracy_drop)
    multipliers = space.model_args(chosen["params"] if chosen else _first_params(space))
    args = {**start.study.user_attrs["student_args"], **multipliers}
    train = config.final_train or config.trial_train
    recipe = recipe_from_dict(
        {
            "name": f"auto student ({config.objective})",
            "model": config.student,
            "model_args": args,
            "teacher": str(start.model_path),
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
    teacher_profile = flow.profile_file(
        start.model_path, start.data, repeats=config.latency_repeats
    )
    model_path: Path | None = None
    if chosen is not None:
        doc, model_path = flow.run_chosen(recipe, start.out, show_progress=show_progress)
        # The report reads baseline -> final: for a student that is teacher -> student.
        doc["student_init"] = doc["baseline"]
        final = torchshrink.load(model_path).eval()
        doc["latency_vs_baseline"] = _paired_latency(start.model_path, final, start.data, recipe)
    else:
        doc = {"recipe": recipe.model_dump(mode="json", by_alias=True), "stages": [],
               "final": teacher_profile, "model_path": None}  # fmt: skip
    doc["baseline"] = teacher_profile
    doc["teacher_path"] = str(start.model_path)
    extra = {
        "mode": "student",
        "family": space.family,
        "chosen_args": args if chosen else None,
        "failures": _failures(start.study),
    }
    return flow.finish_search(
        config, start, doc, space=space, records=records, chosen=chosen, closest=closest,
        chosen_by="search" if chosen else None, model_path=model_path, extra=extra,
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
