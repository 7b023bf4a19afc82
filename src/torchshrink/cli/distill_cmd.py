"""``torchshrink distill``: train a student on a teacher's (or an ensemble's) soft targets.

A thin wrapper over :func:`torchshrink.distill.distill`: it resolves the student, the
teacher(s) and the data, builds a :class:`~torchshrink.distill.DistillConfig` and a
:class:`~torchshrink.train.TrainConfig` from the options, trains, saves the student and reports
its accuracy, the teacher's, and how often the two agree.

Example:
    >>> parse_feature_pairs(["layer2=layer3", "fc1=fc1"])
    {'layer2': 'layer3', 'fc1': 'fc1'}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from torchshrink.cli.common import load_teacher, print_json, resolve
from torchshrink.core.errors import ConfigError

_Model = Annotated[
    str,
    typer.Argument(
        metavar="STUDENT",
        help="Student model reference: zoo:NAME, path/to/file.py:factory, or a model file.",
    ),
]
_Teachers = Annotated[
    list[str],
    typer.Option(
        "--teacher", "-t", help="Trained teacher model (repeat for an ensemble: logits averaged)."
    ),
]
_Data = Annotated[
    str, typer.Option("--data", "-d", help="Data reference: digits, mnist1d, npz:PATH, ...")
]
_Out = Annotated[Path, typer.Option("--out", "-o", help="Where to save the distilled student.")]
_ModelArgs = Annotated[
    list[str] | None,
    typer.Option("--model-arg", "-m", help="Student factory option key=value (repeatable)."),
]
_Features = Annotated[
    list[str] | None,
    typer.Option(
        "--feature", help="Hint / attention pair STUDENT_LAYER=TEACHER_LAYER (repeatable)."
    ),
]


def parse_feature_pairs(items: list[str] | None) -> dict[str, str]:
    """``["s=t", ...]`` -> ``{"s": "t", ...}``.

    Raises:
        ConfigError: an item is not of the form ``STUDENT_LAYER=TEACHER_LAYER``.
    """
    pairs: dict[str, str] = {}
    for item in items or []:
        student, sep, teacher = item.partition("=")
        if not sep or not student.strip() or not teacher.strip():
            raise ConfigError(
                f"--feature: expected STUDENT_LAYER=TEACHER_LAYER such as layer2=layer3, got '{item}'"
            )
        pairs[student.strip()] = teacher.strip()
    return pairs


def distill_command(
    student_ref: _Model,
    teacher: _Teachers,
    data: _Data,
    out: _Out,
    temperature: Annotated[float, typer.Option(help="Softmax temperature T.")] = 4.0,
    alpha: Annotated[
        float, typer.Option(help="Weight of the soft targets; the labels get 1 - alpha.")
    ] = 0.9,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the preset's).")] = None,
    preset: Annotated[
        str, typer.Option(help="TrainConfig preset: scratch, lenet-mnist, digits or finetune.")
    ] = "scratch",
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    feature: _Features = None,
    feature_weight: Annotated[float, typer.Option(help="Weight of the hint losses.")] = 1.0,
    attention_weight: Annotated[
        float, typer.Option(help="Weight of attention transfer on the --feature pairs.")
    ] = 0.0,
    cache: Annotated[
        bool, typer.Option("--cache", help="Compute the teacher's logits once, before training.")
    ] = False,
    model_arg: _ModelArgs = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for data, init and training.")] = 0,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Keep only the first N samples per split.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON record.")] = False,
) -> None:
    """Distill TEACHER(s) into STUDENT on DATA and save the student to --out."""
    from torchshrink.core.modelfile import save
    from torchshrink.distill import DistillConfig, Teacher, agreement, distill
    from torchshrink.measure.accuracy import evaluate
    from torchshrink.train.config import TrainConfig

    if not teacher:
        raise ConfigError("distill: give at least one --teacher MODEL")
    config = DistillConfig(
        temperature=temperature,
        alpha=alpha,
        features=parse_feature_pairs(feature),
        feature_weight=feature_weight,
        attention_weight=attention_weight,
        cache=cache,
    )
    loaded = resolve(
        student_ref, model_args=model_arg, weights=None, data_ref=data, seed=seed, limit=limit
    )
    bundle = loaded.data
    assert bundle is not None  # --data is required
    teachers = [load_teacher(ref, bundle) for ref in teacher]
    ensemble = Teacher(teachers, cache=cache)
    overrides: dict[str, Any] = {
        k: v
        for k, v in {"epochs": epochs, "lr": lr, "batch_size": batch_size}.items()
        if v is not None
    }
    train_config = TrainConfig.preset(preset, **overrides, seed=seed, show_progress=not json_out)
    teacher_accs = [evaluate(m, bundle.test).accuracy for m in teachers]
    result = distill(loaded.model, ensemble, bundle, config, train_config=train_config)
    path = save(loaded.model, out)
    agree = agreement(loaded.model, ensemble, bundle.test)
    record = {
        "student": student_ref,
        "teachers": list(teacher),
        "data": data,
        "out": str(path),
        "test_accuracy": result.final_accuracy,
        "test_error": 1.0 - result.final_accuracy,
        "teacher_accuracies": teacher_accs,
        "agreement": agree,
        "epochs_run": result.epochs_run,
        "distill_config": config.model_dump(mode="json"),
        "train_config": train_config.model_dump(mode="json"),
    }
    if json_out:
        print_json(record)
    else:
        typer.echo(
            f"student test accuracy {100 * result.final_accuracy:.2f}% "
            f"(teacher{'s' if len(teachers) > 1 else ''} "
            f"{', '.join(f'{100 * a:.2f}%' for a in teacher_accs)}; agreement "
            f"{100 * agree:.1f}%) after {result.epochs_run} epochs; saved {path}"
        )
