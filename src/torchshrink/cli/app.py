"""The ``torchshrink`` command line: thin wrappers over the Python API.

User errors (``TorchshrinkError``, invalid configs) print one line and exit non-zero; only
genuine bugs produce a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from torchshrink.cli.auto_cmd import auto_command
from torchshrink.cli.common import example_batch, print_json, resolve
from torchshrink.cli.compress_cmd import compress_command, report_command
from torchshrink.cli.deep_compression_cmd import deep_compression_command
from torchshrink.cli.distill_cmd import distill_command
from torchshrink.cli.prune_cmd import prune_command, sensitivity_command
from torchshrink.cli.quantize_cmd import (
    export_command,
    format_onnx_record,
    onnx_eval,
    onnx_profile,
    quantize_command,
)

app = typer.Typer(
    name="torchshrink",
    help="Make trained PyTorch models smaller and faster, and prove it with measurements.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelArg = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help="Model reference: zoo:NAME, path/to/file.py:factory, hf:DIR, or a torchshrink model file.",
    ),
]
ModelArgOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model-arg", "-m", help="Factory option key=value (repeatable), e.g. num_classes=100."
    ),
]
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", help="Weights to load: .safetensors or a state_dict checkpoint."),
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        "-d",
        help="Data reference: digits, mnist1d, npz:PATH, imagefolder:DIR, text:PATH.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON record instead of tables.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for data splits, init and training.")]
LimitOpt = Annotated[
    int | None,
    typer.Option("--limit", help="Keep only the first N samples of each split (quick runs)."),
]


@app.command()
def train(
    model_ref: ModelArg,
    data: Annotated[
        str, typer.Option("--data", "-d", help="Data reference (see `profile --help`).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to save the trained model file.")],
    model_arg: ModelArgOpt = None,
    weights: WeightsOpt = None,
    epochs: Annotated[
        int | None, typer.Option(help="Number of epochs (default: the preset's).")
    ] = None,
    preset: Annotated[
        str, typer.Option(help="TrainConfig preset: scratch, lenet-mnist, digits or finetune.")
    ] = "scratch",
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd or adamw.")] = None,
    schedule: Annotated[
        str | None, typer.Option(help="constant, step, cosine or onecycle.")
    ] = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Save a checkpoint every epoch here.")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Resume from the last checkpoint in --checkpoint-dir.")
    ] = False,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train or fine-tune MODEL on DATA and save it to --out."""
    from torchshrink.core.modelfile import save
    from torchshrink.train.config import TrainConfig
    from torchshrink.train.loop import train as run_train

    loaded = resolve(
        model_ref, model_args=model_arg, weights=weights, data_ref=data, seed=seed, limit=limit
    )
    base = TrainConfig.preset(preset)
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "schedule": schedule,
            "checkpoint_dir": str(checkpoint_dir) if checkpoint_dir else None,
        }.items()
        if v is not None
    }
    overrides["seed"] = seed
    overrides["resume"] = resume
    overrides["show_progress"] = not json_out
    config = TrainConfig(**{**base.model_dump(), **overrides})
    assert loaded.data is not None  # --data is required
    result = run_train(loaded.model, loaded.data, config)
    path = save(loaded.model, out)
    record = {
        "model": model_ref,
        "data": data,
        "out": str(path),
        "test_accuracy": result.final_accuracy,
        "test_error": 1.0 - result.final_accuracy,
        "best_accuracy": result.best_accuracy,
        "epochs_run": result.epochs_run,
        "stopped_early": result.stopped_early,
        "config": config.model_dump(mode="json"),
    }
    if json_out:
        print_json(record)
    else:
        typer.echo(
            f"test accuracy {100 * result.final_accuracy:.2f}% "
            f"(error {100 * (1 - result.final_accuracy):.2f}%) after {result.epochs_run} epochs; "
            f"saved {path}"
        )


@app.command("eval")
def eval_cmd(
    model_ref: ModelArg,
    data: Annotated[str, typer.Option("--data", "-d", help="Data reference.")],
    model_arg: ModelArgOpt = None,
    weights: WeightsOpt = None,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 256,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate MODEL's accuracy on the test split of DATA (an .onnx file runs in ONNX Runtime)."""
    from torchshrink.measure.accuracy import evaluate

    if model_ref.endswith(".onnx"):  # an exported model: run it in ONNX Runtime
        record = onnx_eval(
            model_ref, data=data, batch_size=batch_size, threads=1, seed=seed, limit=limit
        )
        print_json(record) if json_out else typer.echo(format_onnx_record(record))
        return
    loaded = resolve(
        model_ref, model_args=model_arg, weights=weights, data_ref=data, seed=seed, limit=limit
    )
    assert loaded.data is not None  # --data is required
    r = evaluate(loaded.model, loaded.data.test, batch_size=batch_size)
    record = {
        "model": model_ref,
        "data": data,
        "accuracy": r.accuracy,
        "error": r.error,
        "loss": r.loss,
        "n": r.n,
    }
    if json_out:
        print_json(record)
    else:
        typer.echo(
            f"accuracy {100 * r.accuracy:.2f}%  error {100 * r.error:.2f}%  loss {r.loss:.4f}  (n={r.n})"
        )


@app.command()
def profile(
    model_ref: ModelArg,
    data: DataOpt = None,
    input_shape: Annotated[
        str | None,
        typer.Option(
            help="Per-sample input shape, e.g. 1,28,28 (default: from data or the model)."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size for MACs and latency.")] = 1,
    threads: Annotated[
        int | None, typer.Option(help="Threads for the latency measurement.")
    ] = None,
    repeats: Annotated[int, typer.Option(help="Timed repeats (median and p90 are reported).")] = 20,
    no_latency: Annotated[
        bool, typer.Option("--no-latency", help="Skip the latency measurement.")
    ] = False,
    model_arg: ModelArgOpt = None,
    weights: WeightsOpt = None,
    seed: SeedOpt = 0,
    limit: LimitOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Measure MODEL: params, non-zeros, bytes, MACs, latency, memory, energy (and accuracy with --data)."""
    from torchshrink.cli.render import print_profile
    from torchshrink.measure.profile import profile as run_profile

    if model_ref.endswith(".onnx"):  # an exported model: bytes, latency, accuracy in ORT
        record = onnx_profile(
            model_ref, data=data, input_shape=input_shape, batch_size=batch_size,
            threads=threads, repeats=repeats, seed=seed, limit=limit,
        )  # fmt: skip
        print_json(record) if json_out else typer.echo(format_onnx_record(record))
        return
    loaded = resolve(
        model_ref, model_args=model_arg, weights=weights, data_ref=data, seed=seed, limit=limit
    )
    inputs = example_batch(
        loaded.model, input_shape=input_shape, data=loaded.data, batch_size=batch_size
    )
    file_path = Path(model_ref) if Path(model_ref).is_file() and weights is None else None
    prof = run_profile(
        loaded.model,
        inputs,
        data=loaded.data,
        threads=threads,
        repeats=repeats,
        measure_latency=not no_latency,
        file_path=file_path,
    )
    record = prof.to_dict()
    if json_out:
        print_json(record)
    else:
        print_profile(record, title=model_ref)


@app.command()
def zoo(json_out: JsonOpt = False) -> None:
    """List the models of the zoo with their parameter counts."""
    from rich.console import Console
    from rich.table import Table

    from torchshrink.core.zoo import create_zoo_model, zoo_names

    rows: list[dict[str, Any]] = []
    for name in zoo_names():
        m = create_zoo_model(name)
        doc = (type(m).__doc__ or "").strip().splitlines()
        rows.append(
            {
                "name": f"zoo:{name}",
                "params": sum(p.numel() for p in m.parameters()),
                "about": doc[0] if doc else "",
            }
        )
    if json_out:
        print_json(rows)
        return
    table = Table(title="torchshrink zoo")
    for col in ("model", "params", "about"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for r in rows:
        table.add_row(r["name"], f"{r['params']:,}", r["about"])
    Console().print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/demo"),
    epochs: Annotated[
        int | None, typer.Option(help="Training epochs before compression (default: recipe's).")
    ] = None,
    seed: SeedOpt = 0,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a field of the demo recipe, key=value (repeatable)."),
    ] = None,
) -> None:
    """The embedded default job: the same as `torchshrink compress demo` (train on digits,
    prune, cluster, Huffman-code; writes the model, run.json and report.html)."""
    from torchshrink.cli.demo import run_demo

    run_demo(out, epochs=epochs, seed=seed, overrides=list(set_ or []))


app.command("prune")(prune_command)
app.command("sensitivity")(sensitivity_command)
app.command("distill")(distill_command)
app.command("deep-compression")(deep_compression_command)
app.command("compress")(compress_command)
app.command("report")(report_command)
app.command("quantize")(quantize_command)
app.command("export")(export_command)
app.command("auto")(auto_command)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``torchshrink`` script. Returns the exit status."""
    from pydantic import ValidationError

    from torchshrink.core.errors import TorchshrinkError

    try:
        rv = app(args=argv, prog_name="torchshrink", standalone_mode=False)
    except TorchshrinkError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except ValidationError as exc:
        errs = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        sys.stderr.write(f"error: invalid {exc.title}: {errs}\n")
        return 2
    except typer.Abort:
        sys.stderr.write("aborted\n")
        return 130
    except Exception as exc:
        # Usage errors (bad option, missing argument). Newer typer vendors click, older typer
        # re-exports it, so recognise them by behaviour instead of importing click.
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            return code
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s status."""
    sys.exit(main())
