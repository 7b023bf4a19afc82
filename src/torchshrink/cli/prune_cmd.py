"""``torchshrink prune`` and ``torchshrink sensitivity``: thin wrappers over the pruning API.

Example:
    >>> parse_granularity("nm:2:4"), parse_schedule("iterative:3")
    (('nm', 2, 4), ('iterative', 3))
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any

import typer

from torchshrink.cli.common import example_batch, print_json, resolve
from torchshrink.core.errors import ConfigError

_Model = Annotated[
    str,
    typer.Argument(
        help="Model reference: zoo:NAME, path/to/file.py:factory, hf:DIR, or a model file."
    ),
]
_Data = Annotated[
    str, typer.Option("--data", "-d", help="Data reference: digits, mnist1d, npz:PATH, ...")
]
_ModelArgs = Annotated[
    list[str] | None,
    typer.Option("--model-arg", "-m", help="Factory option key=value (repeatable)."),
]
_Weights = Annotated[Path | None, typer.Option("--weights", help="Weights to load first.")]
_Method = Annotated[
    str, typer.Option(help="Importance: l1 (magnitude), l2, taylor, obd, bn-scale, random.")
]
_Json = Annotated[bool, typer.Option("--json", help="Print a JSON record instead of tables.")]
_Seed = Annotated[int, typer.Option("--seed", help="Seed for data, init, importance and training.")]
_Limit = Annotated[
    int | None, typer.Option("--limit", help="Keep only the first N samples per split.")
]


def parse_granularity(text: str) -> tuple[str, int, int]:
    """``"nm:2:4"`` -> ``("nm", 2, 4)``; other granularities get the default 2:4."""
    name, *rest = text.lower().split(":")
    if name not in ("unstructured", "nm", "channel", "head", "layer") or (rest and name != "nm"):
        raise ConfigError(
            f"--granularity: expected unstructured, nm:N:M, channel, head or layer, got '{text}'"
        )
    if name == "nm" and rest:
        try:
            n, m = (int(x) for x in rest)
        except ValueError:
            raise ConfigError(
                f"--granularity: expected nm:N:M such as nm:2:4, got '{text}'"
            ) from None
        return name, n, m
    return name, 2, 4


def parse_schedule(text: str) -> tuple[str, int]:
    """``"iterative:3"`` -> ``("iterative", 3)``; ``"oneshot"`` and ``"agp"`` take no count."""
    name, _, count = text.lower().partition(":")
    if name not in ("oneshot", "iterative", "agp") or (count and name != "iterative"):
        raise ConfigError(f"--schedule: expected oneshot, iterative:K or agp, got '{text}'")
    if not count:
        return name, 3 if name == "iterative" else 1
    if not count.isdigit() or int(count) < 1:
        raise ConfigError(f"--schedule: K in iterative:K must be a positive integer, got '{count}'")
    return name, int(count)


def _measure(
    model: Any, inputs: Any, data: Any, repeats: int, threads: int | None
) -> dict[str, Any]:
    from torchshrink.measure.profile import profile

    p = profile(
        model, inputs, data=data, repeats=repeats, threads=threads, measure_memory=False
    ).to_dict()
    keys = ("params", "nonzero_params", "macs", "nonzero_macs", "latency_ms_p50", "accuracy")
    return {k: p.get(k) for k in keys}


def prune_command(
    model_ref: _Model,
    data: _Data,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to save the pruned model file.")],
    granularity: Annotated[
        str, typer.Option(help="unstructured, nm:N:M (e.g. nm:2:4), channel, head or layer.")
    ] = "unstructured",
    method: _Method = "l1",
    ratio: Annotated[float, typer.Option(help="Fraction to remove, in [0, 1).")] = 0.5,
    global_: Annotated[bool, typer.Option("--global", help="One threshold across layers.")] = False,
    schedule: Annotated[str, typer.Option(help="oneshot, iterative:K or agp.")] = "oneshot",
    finetune_epochs: Annotated[
        int, typer.Option(help="Fine-tuning epochs (per iterative step).")
    ] = 0,
    finetune_preset: Annotated[
        str, typer.Option(help="TrainConfig preset for fine-tuning.")
    ] = "finetune",
    round_to: Annotated[int, typer.Option(help="Keep channel counts at multiples of this.")] = 1,
    min_channels: Annotated[int, typer.Option(help="Channels every group keeps at least.")] = 1,
    ignore: Annotated[
        list[str] | None, typer.Option(help="Module name or regex to leave alone.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size for MACs and latency.")] = 1,
    threads: Annotated[
        int | None, typer.Option(help="Threads for the latency measurement.")
    ] = None,
    repeats: Annotated[int, typer.Option(help="Timed repeats for latency.")] = 20,
    optimize: Annotated[
        bool,
        typer.Option(
            "--optimize",
            help="Also deploy both models with optimize_for_inference (BN folding, TorchScript, "
            "ONNX Runtime, the direct conv kernel, ...) and report the speedup of the pruned "
            "model over the dense one optimised the same way.",
        ),
    ] = False,
    model_arg: _ModelArgs = None,
    weights: _Weights = None,
    seed: _Seed = 0,
    limit: _Limit = None,
    json_out: _Json = False,
) -> None:
    """Prune MODEL, fine-tune it on DATA if asked, save it to --out, and measure before / after."""
    from torchshrink.core.modelfile import save
    from torchshrink.prune.config import PruneConfig
    from torchshrink.prune.pruner import prune
    from torchshrink.train.config import TrainConfig

    gran, n, m = parse_granularity(granularity)
    sched, steps = parse_schedule(schedule)
    loaded = resolve(
        model_ref, model_args=model_arg, weights=weights, data_ref=data, seed=seed, limit=limit
    )
    inputs = example_batch(loaded.model, input_shape=None, data=loaded.data, batch_size=batch_size)
    finetune = None
    if finetune_epochs > 0:
        finetune = TrainConfig.preset(
            finetune_preset, epochs=finetune_epochs, seed=seed, show_progress=not json_out
        )
    config = PruneConfig.model_validate(
        {
            "granularity": gran,
            "method": method,
            "ratio": ratio,
            "n": n,
            "m": m,
            "global": global_,
            "schedule": sched,
            "steps": steps,
            "finetune": finetune,
            "round_to": round_to,
            "min_channels": min_channels,
            "ignore": tuple(ignore or ()),
            "seed": seed,
        }
    )
    before = _measure(loaded.model, inputs, loaded.data, repeats, threads)
    dense = copy.deepcopy(loaded.model) if optimize else None
    result = prune(loaded.model, config, example_inputs=inputs, data=loaded.data)
    after = _measure(loaded.model, inputs, loaded.data, repeats, threads)
    path = save(
        loaded.model, out, metadata={"prune": config.model_dump(mode="json", by_alias=True)}
    )
    ratios = {
        "params": after["params"] / before["params"],
        "nonzero_params": after["nonzero_params"] / before["nonzero_params"],
        "macs": after["macs"] / before["macs"] if before["macs"] else None,
        "speedup": (before["latency_ms_p50"] / after["latency_ms_p50"])
        if after["latency_ms_p50"]
        else None,
    }
    record: dict[str, Any] = {
        "model": model_ref,
        "data": data,
        "out": str(path),
        "before": before,
        "after": after,
        "ratios": ratios,
        "prune": result.to_dict(),
    }
    if dense is not None:
        record["deploy"] = _deploy(loaded.model, dense, inputs, threads, repeats)
    if json_out:
        print_json(record)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"prune {model_ref}: {gran}, {method}, ratio {ratio}, {schedule}")
    for col in ("metric", "before", "after"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key in before:
        b, a = before[key], after[key]
        fmt = (
            (lambda v: "-" if v is None else f"{v:,.4g}")
            if key != "accuracy"
            else (lambda v: "-" if v is None else f"{100 * v:.2f} %")
        )
        table.add_row(key, fmt(b), fmt(a))
    Console().print(table)
    if "deploy" in record:
        d = record["deploy"]
        typer.echo(
            f"deployed: pruned {d['chosen']} {d['latency_ms']:.3g} ms, dense {d['dense_chosen']} "
            f"{d['dense_latency_ms']:.3g} ms: {d['speedup_vs_dense_optimised']:.2f}x"
        )
    typer.echo(f"saved {path}")


def _deploy(
    pruned: Any, dense: Any, inputs: Any, threads: int | None, repeats: int
) -> dict[str, Any]:
    """The pruned and the dense model each deployed by optimize_for_inference, head to head."""
    from torchshrink.deploy.optimize import OptimizeConfig, optimize_for_inference

    cfg = OptimizeConfig(rounds=max(3, repeats // 2), warmup=1)
    _, rep = optimize_for_inference(pruned, inputs, threads=threads, config=cfg, baseline=dense)
    check, base = rep.baseline, rep.baseline_report
    if check is None or base is None:  # pragma: no cover - always set when baseline= is given
        raise RuntimeError("optimize_for_inference returned no baseline comparison")
    return {
        "chosen": rep.chosen,
        "threads": rep.threads,
        "latency_ms": check.model_ms,
        "dense_chosen": base.chosen,
        "dense_latency_ms": check.baseline_ms,
        "speedup_vs_dense_optimised": check.speedup,
        "speedup_vs_own_eager": rep.speedup,
        "slower_than_dense": check.slower,
    }


def sensitivity_command(
    model_ref: _Model,
    data: _Data,
    granularity: Annotated[
        str, typer.Option(help="unstructured, channel, head or layer.")
    ] = "channel",
    method: _Method = "l1",
    ratios: Annotated[
        str, typer.Option(help="Comma-separated ratios to try.")
    ] = "0.25,0.5,0.75,0.9",
    max_batches: Annotated[int, typer.Option(help="Test batches per evaluation.")] = 8,
    model_arg: _ModelArgs = None,
    weights: _Weights = None,
    seed: _Seed = 0,
    limit: _Limit = None,
    json_out: _Json = False,
) -> None:
    """Accuracy of MODEL on DATA with each layer pruned alone, at several ratios."""
    from torchshrink.prune.sensitivity import sensitivity

    try:
        values = tuple(float(r) for r in ratios.split(",") if r.strip())
    except ValueError:
        raise ConfigError(
            f"--ratios: expected comma-separated numbers like 0.25,0.5, got '{ratios}'"
        ) from None
    loaded = resolve(
        model_ref, model_args=model_arg, weights=weights, data_ref=data, seed=seed, limit=limit
    )
    inputs = example_batch(loaded.model, input_shape=None, data=loaded.data, batch_size=1)
    assert loaded.data is not None  # --data is required
    table = sensitivity(
        loaded.model,
        loaded.data,
        example_inputs=inputs,
        granularity=granularity,
        method=method,
        ratios=values,
        max_batches=max_batches,
        seed=seed,
    )
    if json_out:
        print_json({"model": model_ref, "data": data, **table.to_dict()})
        return
    from rich.console import Console
    from rich.table import Table

    cols = sorted({p.ratio for p in table.points})
    out = Table(title=f"sensitivity of {model_ref} ({granularity}, {method}): accuracy %")
    out.add_column("layer")
    for r in cols:
        out.add_column(f"{r:g}", justify="right")
    out.add_row("(baseline)", *[f"{100 * table.baseline_accuracy:.2f}"] * len(cols))
    for layer in table.layers():
        by_ratio = {p.ratio: p.accuracy for p in table.curve(layer)}
        out.add_row(layer, *[f"{100 * by_ratio[r]:.2f}" if r in by_ratio else "-" for r in cols])
    Console().print(out)
