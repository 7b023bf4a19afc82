"""``torchshrink auto MODEL --data DATA``: search per-layer compression under an accuracy budget.

With ``--student zoo:NAME`` MODEL is the teacher and the search is over ``width`` / ``depth``
multipliers of that zoo family instead, each candidate distilled from the teacher
(:mod:`torchshrink.auto.student`).

Exit status: 0 with a chosen model; 3 (``error: ...`` naming the budget and the closest
candidate's drop) when no candidate met the budget, after run.json and report.html are written.

Example:
    >>> from typer.testing import CliRunner
    >>> from torchshrink.cli.app import app
    >>> CliRunner().invoke(app, ["auto", "--help"]).exit_code
    0
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from torchshrink.cli.common import print_json
from torchshrink.core.errors import ConfigError

if TYPE_CHECKING:
    from torchshrink.auto.result import AutoResult


def auto_command(
    model_ref: Annotated[
        str,
        typer.Argument(
            metavar="MODEL", help="Model reference: zoo:NAME, a model file, file.py:factory."
        ),
    ],
    data: Annotated[str, typer.Option("--data", "-d", help="Data reference.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (study, trials, report).")],
    max_accuracy_drop: Annotated[
        float,
        typer.Option(
            "--max-accuracy-drop",
            help="Budget in accuracy points below the model's own (validation) accuracy.",
        ),
    ] = 0.5,
    objective: Annotated[
        str, typer.Option(help="size (coded file bytes), latency (measured) or energy.")
    ] = "size",
    trials: Annotated[int, typer.Option(help="Complete trials to reach (tops up on resume).")] = 20,
    storage: Annotated[
        str | None, typer.Option(help="optuna storage URL (default sqlite:///OUT/study.db).")
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes sharing the study.")] = 1,
    study: Annotated[str | None, typer.Option(help="Study name (default: derived).")] = None,
    model_arg: Annotated[
        list[str] | None, typer.Option("--model-arg", "-m", help="Factory option key=value.")
    ] = None,
    train_epochs: Annotated[
        int, typer.Option(help="Train MODEL this many epochs first (0: use it as given).")
    ] = 0,
    train_preset: Annotated[str, typer.Option(help="TrainConfig preset of that training.")] = (
        "scratch"
    ),
    trial_epochs: Annotated[
        int | None,
        typer.Option(help="Fine-tuning (--student: distillation) epochs per candidate [2; 3]."),
    ] = None,
    trial_lr: Annotated[
        float | None,
        typer.Option(help="Learning rate of a candidate's fine-tune / distillation [0.02; 0.05]."),
    ] = None,
    promote: Annotated[
        int, typer.Option(help="Candidates given the full fine-tune after the search.")
    ] = 3,
    promote_slack: Annotated[
        float,
        typer.Option(help="Points beyond the budget a candidate may drop and still be promoted."),
    ] = 2.0,
    final_epochs: Annotated[
        int | None,
        typer.Option(
            help="Fine-tuning (--student: distillation) epochs of the chosen one [3; 10]."
        ),
    ] = None,
    val_size: Annotated[int, typer.Option(help="Training samples held out to score.")] = 2000,
    search_train_size: Annotated[
        int | None, typer.Option(help="Training samples per candidate fine-tune (default all).")
    ] = 10000,
    threads: Annotated[int, typer.Option(help="torch threads per process.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of split, sampler and training.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Keep the first N samples per split.")] = None,
    search_only: Annotated[
        bool,
        typer.Option(
            "--search-only", help="Only run trials (a helper on a shared --storage); no model."
        ),
    ] = False,
    student: Annotated[
        str | None,
        typer.Option(
            help="Search a distillation student instead: width / depth multipliers of this zoo "
            "family (e.g. zoo:lenet5), MODEL being the teacher."
        ),
    ] = None,
    widths: Annotated[
        str, typer.Option(help="--student: width multipliers, comma-separated.")
    ] = "0.125,0.25,0.375,0.5,0.75,1",
    depths: Annotated[
        str, typer.Option(help="--student: depth multipliers (families that take depth).")
    ] = "0.5,1,1.5",
    distill: Annotated[
        bool,
        typer.Option(
            "--distill/--no-distill",
            help="Distil each candidate's pruning fine-tune from the dense model (soft targets).",
        ),
    ] = False,
    temperature: Annotated[
        float, typer.Option(help="Distillation temperature (--student, --distill).")
    ] = 4.0,
    alpha: Annotated[
        float, typer.Option(help="Weight of the soft-target loss (--student, --distill).")
    ] = 0.9,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Search pruning ratio / codebook bits per layer under an accuracy budget (optuna),
    keep the Pareto front, and fine-tune and test the best candidate within the budget.
    With --student, search width / depth multipliers of a distilled student instead."""
    from torchshrink.auto import AutoConfig, BudgetNotMetError, run_auto
    from torchshrink.core.modelref import parse_model_args
    from torchshrink.distill.distiller import DistillConfig
    from torchshrink.train.config import TrainConfig

    # the SearchSettings fields, set alike for both searches (the budget given in points)
    settings: dict[str, Any] = {
        "data": data,
        "data_limit": limit,
        "train": (
            TrainConfig.preset(train_preset, epochs=train_epochs, show_progress=False)
            if train_epochs
            else None
        ),
        "objective": objective,
        "max_accuracy_drop": max_accuracy_drop / 100.0,
        "trials": trials,
        "workers": workers,
        "storage": storage,
        "study": study,
        "seed": seed,
        "val_size": val_size,
        "search_train_size": search_train_size,
        "threads": threads,
        "search_only": search_only,
    }
    model_args = parse_model_args(list(model_arg or []))
    if student is not None:
        _student(
            model_ref, student, settings, out=out, model_args=model_args, widths=widths,
            depths=depths, temperature=temperature, alpha=alpha, trial_epochs=trial_epochs,
            trial_lr=trial_lr, final_epochs=final_epochs, json_out=json_out,
        )  # fmt: skip
        return
    trial_epochs = 2 if trial_epochs is None else trial_epochs
    trial_lr = 0.02 if trial_lr is None else trial_lr
    final_epochs = 3 if final_epochs is None else final_epochs

    def quick(epochs: int, **extra: Any) -> TrainConfig | None:
        return (
            TrainConfig.preset("finetune", epochs=epochs, show_progress=False, **extra)
            if epochs
            else None
        )

    config = AutoConfig(
        **settings,
        model=model_ref,
        model_args=model_args,
        trial_finetune=quick(trial_epochs, lr=trial_lr),
        centroid_finetune=quick(min(trial_epochs, 1)),
        final_finetune=quick(final_epochs),
        promote=promote,
        promote_slack=promote_slack / 100.0,
        distill=DistillConfig(temperature=temperature, alpha=alpha) if distill else None,
    )
    res = run_auto(config, out, show_progress=not json_out)
    if search_only:
        done = {"out": str(res.out_dir), "trials": res.trials, "pareto": list(res.pareto)}
        print_json(done) if json_out else typer.echo(
            f"study has {res.trials} complete trials; Pareto front: {list(res.pareto)}"
        )
        return
    summary = _summary(
        res,
        chosen_by=res.chosen_by,
        baseline_val_accuracy=res.baseline_val_accuracy,
        baseline_test_accuracy=res.baseline.get("accuracy"),
        final_test_accuracy=res.final.get("accuracy") if res.chosen is not None else None,
        baseline_file_bytes=res.baseline.get("file_bytes"),
        final_file_bytes=res.final.get("file_bytes") if res.chosen is not None else None,
    )
    if json_out:
        print_json(summary)
    if res.chosen is None:
        raise BudgetNotMetError(res.budget_message(config.max_accuracy_drop))
    if not json_out:
        b, f = res.baseline, res.final
        _echo_chosen(
            res,
            f"chose trial #{res.chosen} of {res.trials} (Pareto front: {len(res.pareto)}); "
            f"test accuracy {100 * (b.get('accuracy') or 0):.2f}% -> "
            f"{100 * (f.get('accuracy') or 0):.2f}%; file {b.get('file_bytes'):,} -> "
            f"{f.get('file_bytes'):,} bytes; latency {b.get('latency_ms_p50') or 0:.4f} -> "
            f"{f.get('latency_ms_p50') or 0:.4f} ms",
        )


def _summary(res: AutoResult, **fields: Any) -> dict[str, Any]:
    # the JSON summary: what both searches report first, then each one's own ``fields``
    return {
        "out": str(res.out_dir),
        "model": str(res.model_path) if res.model_path else None,
        "report": str(res.report_html) if res.report_html else None,
        "trials": res.trials,
        "pareto": list(res.pareto),
        "chosen": res.chosen,
        **fields,
    }


def _echo_chosen(res: AutoResult, line: str) -> None:
    typer.echo(line)
    typer.echo(f"model: {res.model_path}")
    typer.echo(f"report: {res.report_html}")


def _floats(option: str, text: str) -> tuple[float, ...]:
    # "0.25,0.5,1" -> (0.25, 0.5, 1.0); the values themselves are checked by the search.
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(
            f"auto: {option} expects comma-separated numbers such as 0.25,0.5,1, got {text!r}"
        ) from None


def _student(
    teacher: str,
    family: str,
    settings: dict[str, Any],
    *,
    out: Path,
    model_args: dict[str, Any],
    widths: str,
    depths: str,
    temperature: float,
    alpha: float,
    trial_epochs: int | None,
    trial_lr: float | None,
    final_epochs: int | None,
    json_out: bool,
) -> None:
    """``auto TEACHER --student zoo:NAME``: the student search and its summary."""
    from torchshrink.auto import BudgetNotMetError
    from torchshrink.auto.student import run_student_search
    from torchshrink.auto.student_config import StudentConfig, student_train
    from torchshrink.distill.distiller import DistillConfig

    lr = {} if trial_lr is None else {"lr": trial_lr}
    config = StudentConfig(
        **settings,
        teacher=teacher,
        teacher_args=model_args,
        student=family,
        widths=_floats("--widths", widths),
        depths=_floats("--depths", depths),
        distill=DistillConfig(temperature=temperature, alpha=alpha),
        trial_train=student_train(3 if trial_epochs is None else trial_epochs, **lr),
        final_train=student_train(10 if final_epochs is None else final_epochs, **lr),
    )
    res = run_student_search(config, out, show_progress=not json_out)
    doc = json.loads(res.run_json.read_text(encoding="utf-8")) if res.run_json else {}
    args = (doc.get("search") or {}).get("chosen_args")
    summary = _summary(
        res,
        chosen_args=args,
        teacher_val_accuracy=res.baseline_val_accuracy,
        teacher_test_accuracy=res.baseline.get("accuracy"),
        student_test_accuracy=res.final.get("accuracy") if res.chosen is not None else None,
        teacher_file_bytes=res.baseline.get("file_bytes"),
        student_file_bytes=res.final.get("file_bytes") if res.chosen is not None else None,
    )
    if json_out or config.search_only:
        print_json(summary)
    if config.search_only:
        return
    if res.chosen is None:
        failed = (doc.get("search") or {}).get("failures") or []
        why = f"; trial #{failed[0]['number']} failed: {failed[0]['error']}" if failed else ""
        raise BudgetNotMetError(res.budget_message(config.max_accuracy_drop) + why)
    if not json_out:
        b, f = res.baseline, res.final
        mult = ", ".join(f"{k}={v:g}" for k, v in (args or {}).items() if k in ("width", "depth"))
        _echo_chosen(
            res,
            f"chose trial #{res.chosen} of {res.trials} ({family} {mult}; Pareto front: "
            f"{len(res.pareto)}); test accuracy teacher {100 * (b.get('accuracy') or 0):.2f}% "
            f"-> student {100 * (f.get('accuracy') or 0):.2f}%; file {b.get('file_bytes'):,} "
            f"-> {f.get('file_bytes'):,} bytes",
        )
