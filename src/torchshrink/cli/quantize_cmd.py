"""``torchshrink quantize`` / ``export``, and ``eval`` / ``profile`` of an exported ``.onnx`` file.

Example:
    >>> parse_scheme("w4g128"), parse_scheme("mixed:3.5"), parse_scheme("kmeans:16")
    (('uniform', 'w4g128'), ('mixed', 3.5), ('codebook', 'kmeans:16'))
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from torchshrink.cli.common import example_batch, load_data_ref, print_json, resolve
from torchshrink.core.errors import ConfigError, EmptyDataError

_Model = Annotated[
    str, typer.Argument(help="Model reference: zoo:NAME, file.py:factory, hf:DIR or a model file.")
]
_ModelArgs = Annotated[
    list[str] | None,
    typer.Option("--model-arg", "-m", help="Factory option key=value (repeatable)."),
]
_Weights = Annotated[Path | None, typer.Option("--weights", help="Weights to load first.")]
_Json = Annotated[bool, typer.Option("--json", help="Print a JSON record instead of tables.")]
_Seed = Annotated[int, typer.Option("--seed", help="Seed for data splits and calibration.")]
_Limit = Annotated[
    int | None, typer.Option("--limit", help="Keep only the first N samples per split.")
]
_UNIFORM = re.compile(r"^w(\d+)(?:g(\d+))?$")


def parse_scheme(text: str) -> tuple[str, Any]:
    """Classify ``--scheme``: ``("uniform", name)``, ``("codebook", name)`` or ``("mixed", avg)``.

    Raises:
        ConfigError: unknown scheme, or bits out of range (named).
    """
    from torchshrink.quantize.codebook import parse_codebook_scheme
    from torchshrink.quantize.config import SCHEMES

    name = text.strip().lower()
    if re.match(r"^(binary|ternary|pot\d+|kmeans:\d+)$", name):
        parse_codebook_scheme(name)  # range checks
        return "codebook", name
    if name in SCHEMES:
        return "uniform", name
    if name.startswith("mixed:"):
        try:
            return "mixed", float(name[6:])
        except ValueError:
            raise ConfigError(
                f"--scheme {text}: expected mixed:<average bits>, e.g. mixed:4"
            ) from None
    m = _UNIFORM.match(name)
    if m is not None:
        bits = int(m.group(1))
        if not 2 <= bits <= 8:
            raise ConfigError(f"--scheme {text}: weight bits {bits} out of range 2..8")
        return "uniform", name
    raise ConfigError(
        f"--scheme: unknown scheme '{text}'; valid: {', '.join(SCHEMES)}, w<bits>[g<group>], "
        "binary, ternary, pot<bits>, kmeans:<levels>, mixed:<average bits>"
    )


def _uniform_config(name: str, **fields: Any) -> Any:
    from torchshrink.quantize.config import SCHEMES, QuantConfig
    from torchshrink.quantize.spec import QuantSpec

    if name in SCHEMES:
        return QuantConfig.preset(name, **fields)
    m = _UNIFORM.match(name)
    assert m is not None  # parse_scheme accepted it
    group: dict[str, Any] = (
        {"granularity": "per_group", "group_size": int(m.group(2))} if m.group(2) else {}
    )
    spec = QuantSpec.model_validate(
        {"bits": int(m.group(1)), "granularity": "per_channel", **group}
    )
    return QuantConfig.preset("w8", weight=spec, **fields)


def resolve_residual_adds(
    requested: bool | None, kind: str, value: Any, *, qat_epochs: int = 0
) -> bool:
    """Whether ``quantize`` quantizes around residual adds: ``--[no-]residual-adds`` resolved.

    Only static post-training schemes (``w8a8`` / ``int8``) quantize activations with
    calibrated ranges, so only they can run residual adds in int8 (``QLinearAdd`` in ONNX).
    Unset means on for those and off otherwise; asking for it elsewhere is an error rather
    than a silent no-op.

    Raises:
        ConfigError: ``--residual-adds`` with a weight-only, dynamic, codebook or mixed
            scheme, or with ``--qat-epochs`` (quantization-aware training keeps adds float).

    Example:
        >>> [resolve_residual_adds(None, "uniform", s) for s in ("w8a8", "w8a8_dynamic", "w4")]
        [True, False, False]
    """
    from torchshrink.quantize.config import SCHEMES

    mode = SCHEMES[value][0] if kind == "uniform" and value in SCHEMES else "weight_only"
    static = kind == "uniform" and mode == "static" and not qat_epochs
    if requested is None:
        return static
    if requested and not static:
        why = (
            "quantization-aware training (--qat-epochs) keeps residual adds in float"
            if kind == "uniform" and mode == "static"
            else f"scheme '{value}' does not quantize activations with calibrated ranges"
        )
        raise ConfigError(
            f"--residual-adds: {why}; int8 residual adds need a static post-training scheme "
            "(w8a8 or int8) without --qat-epochs"
        )
    return requested


def _measure(model: Any, inputs: Any, data: Any, file_path: Path | None) -> dict[str, Any]:
    from torchshrink.measure.profile import profile

    p = profile(
        model, inputs, data=data, measure_latency=False, measure_memory=False, file_path=file_path
    )
    return {"file_bytes": p.file_bytes, "params": p.params, "accuracy": p.accuracy}


def quantize_command(
    model_ref: _Model,
    data: Annotated[str, typer.Option("--data", "-d", help="Data for calibration and accuracy.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to save the quantized model.")],
    scheme: Annotated[
        str,
        typer.Option(
            help="int8, w8a8, w8, w4, w4g128, w<bits>[g<group>], binary, ternary, pot4, "
            "kmeans:16 or mixed:<average bits>."
        ),
    ] = "w8a8",
    calibration: Annotated[int, typer.Option(help="Calibration samples.")] = 512,
    observer: Annotated[
        str, typer.Option(help="Activation observer: minmax, percentile, mse, kl, ...")
    ] = "minmax",
    keep_float: Annotated[
        list[str] | None, typer.Option(help="Layer name or regex kept in float (repeatable).")
    ] = None,
    ignore: Annotated[
        list[str] | None, typer.Option(help="Module name or regex left alone (repeatable).")
    ] = None,
    qat_epochs: Annotated[
        int,
        typer.Option(
            help="Quantization-aware training epochs after calibration (0: post-training only). "
            "Uniform schemes, binary, ternary and mixed."
        ),
    ] = 0,
    qat_lr: Annotated[
        float, typer.Option(help="Learning rate of quantization-aware training.")
    ] = 0.01,
    residual_adds: Annotated[
        bool | None,
        typer.Option(
            "--residual-adds/--no-residual-adds",
            help="Also quantize the tensors around residual adds (int8 adds in ONNX Runtime). "
            "Default: on for static schemes (w8a8, int8) without --qat-epochs, else off.",
        ),
    ] = None,
    model_arg: _ModelArgs = None,
    weights: _Weights = None,
    seed: _Seed = 0,
    limit: _Limit = None,
    json_out: _Json = False,
) -> None:
    """Quantize MODEL (calibrated on DATA), save it to --out, print per-layer bits and sizes."""
    from torchshrink.core.modelfile import save
    from torchshrink.quantize.codebook import quantize_codebook
    from torchshrink.quantize.mixed import mixed_precision
    from torchshrink.quantize.ptq import get_quant_report, quantize

    kind, value = parse_scheme(scheme)
    if qat_epochs < 0:
        raise ConfigError(f"--qat-epochs {qat_epochs}: expected 0 (no training) or more epochs")
    if qat_epochs and kind == "codebook" and value not in ("binary", "ternary"):
        raise ConfigError(
            f"--qat-epochs: scheme '{value}' has no quantization-aware training; it works with "
            "uniform schemes (int8, w4, w<bits>[g<group>]), binary, ternary and mixed:<bits>"
        )
    if calibration <= 0:
        raise EmptyDataError(f"--calibration {calibration}: calibration needs at least 1 sample")
    residual = resolve_residual_adds(residual_adds, kind, value, qat_epochs=qat_epochs)
    loaded = resolve(
        model_ref, model_args=model_arg, weights=weights, data_ref=data, seed=seed, limit=limit
    )
    assert loaded.data is not None  # --data is required
    calib = loaded.data.calibration(calibration, seed=seed)
    inputs = example_batch(loaded.model, input_shape=None, data=loaded.data, batch_size=1)
    before = _measure(loaded.model, inputs, loaded.data, None)
    floats, ignored = list(keep_float or ()), tuple(ignore or ())
    plan = None
    qat_record: dict[str, Any] | None = None
    if qat_epochs:
        from torchshrink.quantize.config import QuantConfig
        from torchshrink.quantize.qat import qat
        from torchshrink.train.config import TrainConfig

        if kind == "mixed":
            plan = mixed_precision(
                loaded.model, calib, avg_bits=value, keep_float=floats, ignore=ignored
            )
            qconfig = plan.config
        elif kind == "codebook":  # binary / ternary: sign or threshold codes, trained with STE
            qconfig = QuantConfig.preset(
                value, ignore=ignored, overrides=dict.fromkeys(floats, "float")
            )
        else:
            qconfig = _uniform_config(
                value, observer=observer, calibration_size=calibration, ignore=ignored,
                overrides=dict.fromkeys(floats, "float"),
            )  # fmt: skip
        tcfg = TrainConfig.preset(
            "finetune", epochs=qat_epochs, lr=qat_lr, seed=seed, show_progress=not json_out
        )
        res = qat(loaded.model, loaded.data, qconfig, tcfg)
        qmodel = res.model
        qat_record = {"epochs": res.train.epochs_run, "lr": qat_lr,
                      "final_accuracy": res.train.final_accuracy}  # fmt: skip
    elif kind == "codebook":
        qmodel = quantize_codebook(loaded.model, value, ignore=ignored, keep_float=floats)
    elif kind == "mixed":
        plan = mixed_precision(
            loaded.model, calib, avg_bits=value, keep_float=floats, ignore=ignored
        )
        qmodel = quantize(loaded.model, plan.config)
    else:
        config = _uniform_config(
            value,
            observer=observer,
            calibration_size=calibration,
            ignore=ignored,
            overrides=dict.fromkeys(floats, "float"),
        )
        qmodel = quantize(loaded.model, config, calibration=calib, residual_adds=residual)
    report = get_quant_report(qmodel)
    assert report is not None  # both drivers record one
    sens = {r.name: r.sensitivity for r in plan.layers} if plan is not None else {}
    params = {n: int(m.weight.numel()) for n, m in loaded.model.named_modules() if _has_w(m)}
    layers = [
        {
            "name": r.name,
            "type": r.layer_type,
            "bits": r.weight_bits,
            "granularity": r.granularity,
            "params": params.get(r.name),
            "sensitivity": sens.get(r.name),
            "note": r.reason,
        }
        for r in report.layers
    ]
    meta = {"quantize": {"scheme": scheme, "calibration": calibration,
                         "residual_adds": residual, "layers": layers}}  # fmt: skip
    path = save(qmodel, out, metadata=meta)
    after = _measure(qmodel, inputs, loaded.data, path)
    record = {
        "model": model_ref,
        "data": data,
        "scheme": scheme,
        "out": str(path),
        "mode": report.mode,
        "calibration_samples": report.calibration_samples,
        "residual_adds": residual,
        "before": before,
        "after": after,
        "size_ratio": after["file_bytes"] / before["file_bytes"],
        "layers": layers,
    }
    if plan is not None:
        record["avg_bits"] = plan.avg_bits
    if qat_record is not None:
        record["qat"] = qat_record
    if json_out:
        print_json(record)
        return
    _print_quantize(record)


def _has_w(m: Any) -> bool:
    w = getattr(m, "weight", None)
    return w is not None and hasattr(w, "numel") and w.dim() >= 2


def _print_quantize(record: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"quantize {record['model']}: {record['scheme']}")
    for col in ("layer", "type", "bits", "granularity", "params", "sensitivity", "note"):
        table.add_column(col, justify="right" if col in ("bits", "params") else "left")
    for r in record["layers"]:
        table.add_row(
            r["name"],
            r["type"],
            "float" if r["bits"] is None else str(r["bits"]),
            r["granularity"] or "-",
            "-" if r["params"] is None else f"{r['params']:,}",
            "-" if r["sensitivity"] is None else f"{r['sensitivity']:.3g}",
            r["note"],
        )
    console = Console()
    console.print(table)
    b, a = record["before"], record["after"]
    acc = (
        f"; accuracy {100 * b['accuracy']:.2f}% -> {100 * a['accuracy']:.2f}%"
        if a.get("accuracy") is not None
        else ""
    )
    adds = "; residual adds in int8" if record["residual_adds"] else ""
    console.print(
        f"file {b['file_bytes']:,} -> {a['file_bytes']:,} bytes "
        f"({record['size_ratio']:.3f}x){acc}{adds}; saved {record['out']}"
    )


def export_command(
    model_ref: _Model,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the exported model.")],
    format_: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="Data for the example input shape.")
    ] = None,
    input_shape: Annotated[
        str | None, typer.Option(help="Per-sample input shape, e.g. 1,28,28.")
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (17 or newer).")] = 17,
    model_arg: _ModelArgs = None,
    weights: _Weights = None,
    seed: _Seed = 0,
    json_out: _Json = False,
) -> None:
    """Export MODEL (float or quantized) to ONNX; check it against PyTorch in ONNX Runtime."""
    from torchshrink.deploy.onnx_export import export_onnx
    from torchshrink.deploy.ort_session import OrtSession

    if format_.lower() != "onnx":
        raise ConfigError(f"--format: only 'onnx' is supported, got '{format_}'")
    loaded = resolve(model_ref, model_args=model_arg, weights=weights, data_ref=data, seed=seed)
    inputs = example_batch(loaded.model, input_shape=input_shape, data=loaded.data, batch_size=8)
    result = export_onnx(loaded.model, out, example_inputs=inputs[:1], opset=opset)
    import torch

    with torch.no_grad():
        ref = loaded.model.eval()(inputs).float()
    got = OrtSession(result.path, threads=1).run(inputs)
    record = {
        "model": model_ref,
        "out": str(result.path),
        "format": "onnx",
        "opset": result.opset,
        "file_bytes": result.path.stat().st_size,
        "int8_layers": list(result.int8_layers),
        "weight_only_layers": list(result.weight_only_layers),
        "ort_max_abs_diff": float((got - ref).abs().max()),
        "ort_top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
    }
    if json_out:
        print_json(record)
        return
    typer.echo(
        f"wrote {record['out']} ({record['file_bytes']:,} bytes, opset {opset}); "
        f"int8 layers: {len(result.int8_layers)}, weight-only: {len(result.weight_only_layers)}; "
        f"ONNX Runtime vs PyTorch on {inputs.shape[0]} inputs: max abs diff "
        f"{record['ort_max_abs_diff']:.3g}, top-1 agreement {record['ort_top1_agreement']:.3f}"
    )


def onnx_eval(
    path: str, *, data: str, batch_size: int, threads: int, seed: int, limit: int | None
) -> dict[str, Any]:
    """Accuracy of an ``.onnx`` file run by ONNX Runtime on the test split of ``data``."""
    from torchshrink.deploy.ort_session import OrtSession
    from torchshrink.measure.accuracy import evaluate

    bundle = load_data_ref(data, seed=seed, limit=limit)
    assert bundle is not None  # --data is required
    r = evaluate(OrtSession(path, threads=threads).as_module(), bundle.test, batch_size=batch_size)
    return {"model": path, "data": data, "runtime": "onnxruntime", "accuracy": r.accuracy,
            "error": r.error, "loss": r.loss, "n": r.n}  # fmt: skip


def onnx_profile(
    path: str,
    *,
    data: str | None,
    input_shape: str | None,
    batch_size: int,
    threads: int | None,
    repeats: int,
    seed: int,
    limit: int | None,
) -> dict[str, Any]:
    """File bytes, ORT latency (median / p90), int8 op share and (with data) accuracy."""
    import torch

    from torchshrink.cli.common import parse_shape
    from torchshrink.deploy.ort_session import OrtSession
    from torchshrink.deploy.timing import interleaved_times
    from torchshrink.measure.accuracy import evaluate

    bundle = load_data_ref(data, seed=seed, limit=limit)
    sess = OrtSession(path, threads=threads or 1)
    if input_shape is not None:
        x = torch.randn(batch_size, *parse_shape(input_shape))
    elif bundle is not None:
        x = example_batch(torch.nn.Identity(), input_shape=None, data=bundle, batch_size=batch_size)
    else:
        dims = sess.session.get_inputs()[0].shape[1:]
        if not all(isinstance(d, int) for d in dims):
            raise ConfigError(f"{path}: the input shape is not fixed; pass --input-shape or --data")
        x = torch.randn(batch_size, *dims)
    arr = x.float().numpy()
    timing = interleaved_times({"ort": lambda: sess.run_numpy(arr)}, rounds=repeats)["ort"]
    ops = sess.op_report()
    record: dict[str, Any] = {
        "model": path,
        "runtime": "onnxruntime",
        "file_bytes": Path(path).stat().st_size,
        "batch_size": batch_size,
        "threads": sess.threads,
        "latency_ms_p50": timing.median_ms,
        "latency_ms_p90": timing.p90_ms,
        "throughput": batch_size / (timing.median_ms / 1000) if timing.median_ms else None,
        "int8_compute_ops": ops.int8_compute,
        "float_compute_ops": ops.float_compute,
        "int8_fraction": ops.int8_fraction,
    }
    if bundle is not None and bundle.task == "classification":
        record["accuracy"] = evaluate(sess.as_module(), bundle.test).accuracy
    return record


def format_onnx_record(record: dict[str, Any]) -> str:
    """One line for an ``eval`` / ``profile`` record of an ``.onnx`` file.

    Example:
        >>> format_onnx_record({"model": "m.onnx", "accuracy": 0.5, "n": 4})
        'm.onnx (onnxruntime): accuracy 50.00%, n=4'
    """
    parts = []
    if "file_bytes" in record:
        parts.append(f"{record['file_bytes']:,} bytes")
    if "latency_ms_p50" in record:
        parts.append(
            f"latency p50 {record['latency_ms_p50']:.3f} ms, p90 {record['latency_ms_p90']:.3f} ms "
            f"(batch {record['batch_size']}, {record['threads']} thread(s))"
        )
        parts.append(f"int8 compute ops {record['int8_compute_ops']}/"
                     f"{record['int8_compute_ops'] + record['float_compute_ops']}")  # fmt: skip
    if record.get("accuracy") is not None:
        parts.append(f"accuracy {100 * record['accuracy']:.2f}%")
    if "n" in record:
        parts.append(f"n={record['n']}")
    return f"{record['model']} (onnxruntime): " + ", ".join(parts)
