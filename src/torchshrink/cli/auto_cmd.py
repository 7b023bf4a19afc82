"""``torchshrink auto MODEL --data DATA``: search per-layer compression under an accuracy budget.

Exit status: 0 with a chosen model; 3 (``error: ...`` naming the budget and the closest
candidate's drop) when no candidate met the budget, after run.json and report.html are written.

Example:
    >>> from typer.testing import CliRunner
    >>> from torchshrink.cli.app import app
    >>> CliRunner().invoke(app, ["auto", "--help"]).exit_code
    0
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from torchshrink.cli.common import print_json


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
    trial_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs per candidate.")] = 2,
    trial_lr: Annotated[float, typer.Option(help="Learning rate of a candidate's fine-tune.")] = (
        0.02
    ),
    promote: Annotated[
        int, typer.Option(help="Candidates given the full fine-tune after the search.")
    ] = 3,
    promote_slack: Annotated[
        float,
        typer.Option(help="Points beyond the budget a candidate may drop and still be promoted."),
    ] = 2.0,
    final_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs of the chosen one.")] = 3,
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
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Search pruning ratio / codebook bits per layer under an accuracy budget (optuna),
    keep the Pareto front, and fine-tune and test the best candidate within the budget."""
    from torchshrink.auto import AutoConfig, BudgetNotMetError, run_auto
    from torchshrink.core.modelref import parse_model_args
    from torchshrink.train.config import TrainConfig

    def quick(epochs: int, **extra: Any) -> TrainConfig | None:
        return (
            TrainConfig.preset("finetune", epochs=epochs, show_progress=False, **extra)
            if epochs
            else None
        )

    train = (
        TrainConfig.preset(train_preset, epochs=train_epochs, show_progress=False)
        if train_epochs
        else None
    )
    config = AutoConfig(
        model=model_ref,
        model_args=parse_model_args(list(model_arg or [])),
        data=data,
        data_limit=limit,
        train=train,
        objective=objective,  # type: ignore[arg-type]  # pydantic validates the literal
        max_accuracy_drop=max_accuracy_drop / 100.0,
        trials=trials,
        workers=workers,
        storage=storage,
        study=study,
        seed=seed,
        val_size=val_size,
        search_train_size=search_train_size,
        trial_finetune=quick(trial_epochs, lr=trial_lr),
        centroid_finetune=quick(min(trial_epochs, 1)),
        final_finetune=quick(final_epochs),
        promote=promote,
        promote_slack=promote_slack / 100.0,
        threads=threads,
        search_only=search_only,
    )
    res = run_auto(config, out, show_progress=not json_out)
    if search_only:
        done = {"out": str(res.out_dir), "trials": res.trials, "pareto": list(res.pareto)}
        print_json(done) if json_out else typer.echo(
            f"study has {res.trials} complete trials; Pareto front: {list(res.pareto)}"
        )
        return
    summary: dict[str, Any] = {
        "out": str(res.out_dir),
        "model": str(res.model_path) if res.model_path else None,
        "report": str(res.report_html) if res.report_html else None,
        "trials": res.trials,
        "pareto": list(res.pareto),
        "chosen": res.chosen,
        "chosen_by": res.chosen_by,
        "baseline_val_accuracy": res.baseline_val_accuracy,
        "baseline_test_accuracy": res.baseline.get("accuracy"),
        "final_test_accuracy": res.final.get("accuracy") if res.chosen is not None else None,
        "baseline_file_bytes": res.baseline.get("file_bytes"),
        "final_file_bytes": res.final.get("file_bytes") if res.chosen is not None else None,
    }
    if json_out:
        print_json(summary)
    if res.chosen is None:
        raise BudgetNotMetError(res.budget_message(config.max_accuracy_drop))
    if not json_out:
        b, f = res.baseline, res.final
        typer.echo(
            f"chose trial #{res.chosen} of {res.trials} (Pareto front: {len(res.pareto)}); "
            f"test accuracy {100 * (b.get('accuracy') or 0):.2f}% -> "
            f"{100 * (f.get('accuracy') or 0):.2f}%; file {b.get('file_bytes'):,} -> "
            f"{f.get('file_bytes'):,} bytes; latency {b.get('latency_ms_p50') or 0:.4f} -> "
            f"{f.get('latency_ms_p50') or 0:.4f} ms"
        )
        typer.echo(f"model: {res.model_path}")
        typer.echo(f"report: {res.report_html}")
