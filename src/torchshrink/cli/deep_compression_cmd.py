"""``torchshrink deep-compression``: prune, share weights, Huffman-code and save in one command.

A thin wrapper over :func:`torchshrink.pipeline.deep_compression`.

Example:
    >>> parse_ratios("fc1=0.92,fc2=0.91")
    {'fc1': 0.92, 'fc2': 0.91}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, cast

import typer

from torchshrink.cli.common import example_batch, load_teacher, print_json, resolve
from torchshrink.core.errors import ConfigError

_Model = Annotated[
    str,
    typer.Argument(
        metavar="MODEL",
        help="Model reference: zoo:NAME, path/to/file.py:factory, hf:DIR, or a model file.",
    ),
]


def parse_ratios(text: str | None) -> dict[str, float]:
    """``"fc1=0.92,fc2=0.91"`` -> ``{"fc1": 0.92, "fc2": 0.91}``."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(
                f"--layer-ratios: expected NAME=RATIO pairs like fc1=0.92,fc2=0.91, got '{part}'"
            ) from None
    return out


def deep_compression_command(
    model_ref: _Model,
    data: Annotated[
        str, typer.Option("--data", "-d", help="Data reference: digits, npz:PATH, ...")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The compressed model file to write.")],
    prune_ratio: Annotated[
        float, typer.Option(help="Fraction of each Linear / Conv weight removed, in [0, 1).")
    ] = 0.92,
    layer_ratios: Annotated[
        str | None, typer.Option(help="Per-layer ratios NAME=RATIO,... (override --prune-ratio).")
    ] = None,
    prune_steps: Annotated[int, typer.Option(help="Rounds of prune + fine-tune.")] = 3,
    fc_bits: Annotated[int, typer.Option(help="Index bits of fully connected layers.")] = 5,
    conv_bits: Annotated[int, typer.Option(help="Index bits of convolution layers.")] = 8,
    finetune_epochs: Annotated[
        int, typer.Option(help="Fine-tuning epochs per pruning round and for the centroids.")
    ] = 2,
    centroid_lr: Annotated[float, typer.Option(help="Learning rate of centroid tuning.")] = 1e-3,
    schedule: Annotated[
        str,
        typer.Option(
            help="iterative (prune a step, fine-tune, repeat) or agp (sparsity rises during one "
            "fine-tuning run of --finetune-epochs)."
        ),
    ] = "iterative",
    distill: Annotated[
        bool,
        typer.Option(
            "--distill/--no-distill",
            help="Every fine-tuning also learns soft targets: of --teacher, else of a frozen "
            "copy of MODEL as given.",
        ),
    ] = False,
    teacher: Annotated[
        list[str] | None,
        typer.Option(
            "--teacher",
            "-t",
            help="Teacher model (repeat for an ensemble: logits averaged); implies --distill.",
        ),
    ] = None,
    temperature: Annotated[float, typer.Option(help="Distillation temperature.")] = 4.0,
    alpha: Annotated[
        float, typer.Option(help="Weight of the soft-target loss (labels get 1 - alpha).")
    ] = 0.7,
    model_arg: Annotated[
        list[str] | None,
        typer.Option("--model-arg", "-m", help="Factory option key=value (repeatable)."),
    ] = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="Weights to load first.")
    ] = None,
    fold_dead: Annotated[
        bool,
        typer.Option(
            "--fold-dead",
            help="Remove the neurons / channels left with no weight, their constant output "
            "folded into the next Linear's bias (exact); the saved model is smaller.",
        ),
    ] = False,
    bias_bits: Annotated[
        int | None,
        typer.Option(
            "--bias-bits",
            help="Also share each layer's bias among 2**BITS values (tuned with the "
            "centroids); unset: biases stay exact float32.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for data, init and training.")] = 0,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Keep only the first N samples per split.")
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a JSON record instead of a table.")
    ] = False,
) -> None:
    """Deep Compression of MODEL on DATA: prune, cluster, tune centroids, Huffman-code, save."""
    from torchshrink.distill import DistillConfig
    from torchshrink.pipeline.deep_compression import DeepCompressionConfig, deep_compression
    from torchshrink.train.config import TrainConfig

    if schedule not in ("iterative", "agp"):
        raise ConfigError(f"--schedule: expected 'iterative' or 'agp', got '{schedule}'")
    kd = DistillConfig(temperature=temperature, alpha=alpha) if distill or teacher else None

    def ft(lr: float | None = None) -> TrainConfig | None:
        if finetune_epochs <= 0:
            return None
        extra = {} if lr is None else {"lr": lr}
        return TrainConfig.preset(
            "finetune", epochs=finetune_epochs, seed=seed, show_progress=not json_out, **extra
        )

    config = DeepCompressionConfig(
        prune_ratio=prune_ratio,
        layer_ratios=parse_ratios(layer_ratios),
        prune_steps=prune_steps,
        prune_schedule=cast(Literal["iterative", "agp"], schedule),
        prune_finetune=ft(),
        fc_bits=fc_bits,
        conv_bits=conv_bits,
        centroid_finetune=ft(centroid_lr),
        distill=kd,
        fold_dead=fold_dead,
        bias_bits=bias_bits,
        seed=seed,
    )
    loaded = resolve(
        model_ref, model_args=model_arg, weights=weights, data_ref=data, seed=seed, limit=limit
    )
    assert loaded.data is not None  # --data is required
    inputs = example_batch(loaded.model, input_shape=None, data=loaded.data, batch_size=1)
    teachers = [load_teacher(ref, loaded.data) for ref in teacher or ()]
    result = deep_compression(
        loaded.model,
        loaded.data,
        path=out,
        config=config,
        example_inputs=inputs,
        teacher=teachers or None,
    )
    record = {"model": model_ref, "data": data, "teachers": list(teacher or ()), **result.to_dict()}
    if json_out:
        print_json(record)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"deep compression of {model_ref}")
    for col in ("stage", "error %", "non-zeros", "file bytes", "ratio"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for s in result.stages:
        table.add_row(
            s.stage,
            f"{100 * s.error:.2f}",
            f"{s.nonzeros:,}",
            f"{s.file_bytes:,}",
            f"{s.ratio:.1f}x",
        )
    Console().print(table)
    typer.echo(f"saved {result.path} ({result.ratio:.1f}x smaller than dense fp32)")
