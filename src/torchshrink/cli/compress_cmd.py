"""``torchshrink compress RECIPE`` and ``torchshrink report DIR``: thin wrappers over the runner.

Example:
    >>> from typer.testing import CliRunner
    >>> from torchshrink.cli.app import app
    >>> CliRunner().invoke(app, ["compress", "--help"]).exit_code
    0
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from torchshrink.cli.common import print_json
from torchshrink.cli.render import print_run_summary, run_gains


def compress_command(
    recipe: Annotated[
        str,
        typer.Argument(
            metavar="RECIPE",
            help="A recipe file (.yaml) or a built-in recipe: deep-compression, int8-ptq, "
            "int4-weight-only, structured-50, prune-distill-quantize, demo.",
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default runs/RECIPE).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue after the last finished stage in --out.")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a recipe field, key=value with a dotted key (repeatable), "
            "e.g. --set train.epochs=1 --set stages.0.config.ratio=0.3.",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print run.json's summary.")] = False,
) -> None:
    """Run RECIPE's stages (checkpointed, resumable); write the model, run.json and report.html."""
    from torchshrink.pipeline.recipe import load_recipe
    from torchshrink.pipeline.runner import run_recipe

    r = load_recipe(recipe, overrides=list(set_ or []))
    folder = out if out is not None else Path("runs") / Path(recipe).stem
    record = run_recipe(r, folder, resume=resume, show_progress=not json_out)
    from torchshrink.train.distributed import is_main

    if not is_main():  # under torchrun rank 0 alone reports (and wrote the files)
        return
    rows = [("baseline", record.baseline)] + [
        (f"{s.index + 1}. {s.name}", s.metrics) for s in record.stages
    ]
    if json_out:
        print_json(
            {
                "out": str(record.out_dir),
                "model": str(record.model_path),
                "report": str(record.report_html),
                "resumed_from": record.resumed_from,
                "stages": [{"stage": label, **_brief(m)} for label, m in rows],
                "gains": run_gains(rows[0][1], rows[-1][1]),
                "latency_vs_baseline": record.latency_vs_baseline,
            }
        )
        return
    print_run_summary(
        rows,
        paired=record.latency_vs_baseline,
        title=f"torchshrink compress: {r.name or Path(recipe).stem}",
    )
    print_outputs(record)


def print_outputs(record: Any) -> None:
    """Print where the run's model, compressed file (when one was written) and report are."""
    typer.echo(f"model: {record.model_path}")
    packed = record.stages[-1].details.get("file_path") if record.stages else None
    if packed and Path(packed) != Path(record.model_path):
        typer.echo(f"compressed model file: {packed}")
    typer.echo(f"report: {record.report_html}")


def report_command(
    run_dir: Annotated[Path, typer.Argument(metavar="DIR", help="A run folder holding run.json.")],
) -> None:
    """Re-render DIR/report.html from DIR/run.json."""
    from torchshrink.report.html import render_report

    typer.echo(f"report: {render_report(run_dir)}")


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("accuracy", "params", "nonzero_params", "file_bytes", "macs", "latency_ms_p50")
    return {k: m.get(k) for k in keys}
