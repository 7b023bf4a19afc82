"""Benchmark: static int8 per-channel PTQ of LeNet-5 on MNIST, simulated and in ONNX Runtime.

Trains ``zoo:lenet5`` with ``torchshrink.train`` (``scratch`` preset), quantizes it with
``QuantConfig.preset("w8a8")`` (int8 symmetric per-channel weights, uint8 per-tensor
activations calibrated with min-max on training images, BatchNorm folding), exports the QDQ
model and runs it in ONNX Runtime. Records in ``benchmarks/results/ptq_lenet5.json``:

- test error: fp32, int8 simulated in PyTorch, int8 in ONNX Runtime, and the top-1 agreement /
  max abs logit difference between the last two;
- latency at batch 64 with 2 threads: torch eager fp32, ORT fp32, ORT int8 (median of the
  per-round medians; the candidates are interleaved round by round because these machines are
  shared and noisy), and the ratios to torch eager fp32 and to ORT fp32;
- which ops ONNX Runtime runs in int8 after its graph optimisation;
- the same for a variant that keeps the first conv in float (``overrides={"conv1": "float"}``).

Target (issue 4): int8 error within 0.1 points of fp32, int8 measurably faster than fp32.

Run:  python benchmarks/ptq_lenet5.py [--epochs N] [--calibration N] [--rounds N] [--data PATH]
      [--weights FILE.safetensors]   (reuse the trained LeNet-5 of an earlier run)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from _common import machine_info
from safetensors.torch import load_file, save_file
from torch import nn

import torchshrink
from torchshrink.core.zoo import create_zoo_model
from torchshrink.deploy.onnx_export import export_onnx
from torchshrink.deploy.ort_session import OrtSession
from torchshrink.measure.accuracy import evaluate
from torchshrink.measure.latency import measure_latency
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.ptq import get_quant_report, quantize
from torchshrink.train.config import TrainConfig
from torchshrink.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist.npz"
OUT = ROOT / "benchmarks" / "results" / "ptq_lenet5.json"
TARGET_ERROR_GAP = 0.001  # 0.1 points


def latencies(
    candidates: dict[str, nn.Module], x: torch.Tensor, *, threads: int, rounds: int, repeats: int
) -> dict[str, dict[str, Any]]:
    """Median-of-round-medians latency (ms) of every candidate, interleaved round by round."""
    per_round: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, model in candidates.items():
            stats = measure_latency(
                model, x, threads=threads, warmup=3, repeats=repeats, max_seconds=30
            )
            per_round[name].append(stats.p50_ms)
    return {
        name: {"median_ms": statistics.median(v), "round_medians_ms": v}
        for name, v in per_round.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration", type=int, default=1024)
    parser.add_argument("--observer", default="minmax")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="trained weights (safetensors): load if present, else train and save",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = torchshrink.load_data(f"npz:{args.data}")
    torch.manual_seed(args.seed)
    model = create_zoo_model("lenet5", num_classes=10, in_channels=1, input_size=28)
    train_cfg = TrainConfig.preset(
        "scratch",
        epochs=args.epochs,
        seed=args.seed,
        num_threads=args.threads,
        show_progress=False,
        eval_every=args.epochs,
    )
    t0 = time.perf_counter()
    if args.weights is not None and args.weights.exists():
        # a model this script trained before with the same settings: skip the minutes of training
        model.load_state_dict(load_file(str(args.weights)))
    else:
        train(model, data, train_cfg)
        if args.weights is not None:
            save_file(model.state_dict(), str(args.weights))
    train_s = time.perf_counter() - t0
    model.eval()

    qcfg = QuantConfig.preset("w8a8", calibration_size=args.calibration, observer=args.observer)
    t0 = time.perf_counter()
    qmodel = quantize(model, qcfg, calibration=data)
    quant_s = time.perf_counter() - t0
    report = get_quant_report(qmodel)
    # Variant: the first conv (1 input channel, K = 25) stays float. ORT's int8 QLinearConv is
    # im2col + int8 GEMM, which loses to the fp32 NCHWc direct convolution at such tiny K / N.
    qcfg_first_float = qcfg.model_copy(update={"overrides": {"conv1": "float"}})
    qmodel_ff = quantize(model, qcfg_first_float, calibration=data)

    tmp = Path(tempfile.mkdtemp(prefix="ptq_lenet5-"))
    x_example = data.example_inputs(1)
    fp32_onnx = export_onnx(model, tmp / "lenet5_fp32.onnx", example_inputs=x_example)
    int8_onnx = export_onnx(qmodel, tmp / "lenet5_int8.onnx", example_inputs=x_example)
    ort_fp32 = OrtSession(fp32_onnx.path, threads=args.threads)
    ort_int8 = OrtSession(int8_onnx.path, threads=args.threads)
    ff_onnx = export_onnx(qmodel_ff, tmp / "lenet5_int8_conv1_float.onnx", example_inputs=x_example)
    ort_ff = OrtSession(ff_onnx.path, threads=args.threads)

    err = {
        "fp32_torch": evaluate(model, data.test).error,
        "int8_simulated": evaluate(qmodel, data.test).error,
        "int8_ort": evaluate(ort_int8.as_module(), data.test, batch_size=args.batch).error,
        "int8_conv1_float_simulated": evaluate(qmodel_ff, data.test).error,
        "int8_conv1_float_ort": evaluate(
            ort_ff.as_module(), data.test, batch_size=args.batch
        ).error,
    }
    # agreement of the ORT int8 model with the PyTorch simulation on the whole test split
    agree, max_diff, n = 0, 0.0, 0
    with torch.no_grad():
        for xb, _ in data.loader("test", batch_size=512):
            sim, ort = qmodel(xb), ort_int8.run(xb)
            agree += int((sim.argmax(1) == ort.argmax(1)).sum())
            max_diff = max(max_diff, float((sim - ort).abs().max()))
            n += xb.shape[0]

    x = data.example_inputs(args.batch)  # (64, 1, 28, 28)
    paths = {
        "ort_fp32": fp32_onnx.path,
        "ort_int8": int8_onnx.path,
        "ort_int8_conv1_float": ff_onnx.path,
    }
    by_threads = {}
    # The requested thread count, and 1 thread: on a shared, oversubscribed 2-core machine a
    # second spinning thread can cost more than it brings; both are recorded, neither hidden.
    for threads in dict.fromkeys([args.threads, 1]):
        candidates: dict[str, nn.Module] = {"torch_eager_fp32": model}
        candidates.update({k: OrtSession(p, threads=threads).as_module() for k, p in paths.items()})
        lat_t = latencies(candidates, x, threads=threads, rounds=args.rounds, repeats=args.repeats)
        by_threads[threads] = {
            "latency_ms": lat_t,
            "speedup_vs_torch_eager_fp32": {
                k: lat_t["torch_eager_fp32"]["median_ms"] / v["median_ms"] for k, v in lat_t.items()
            },
            "int8_speedup_vs_ort_fp32": {
                k: lat_t["ort_fp32"]["median_ms"] / lat_t[k]["median_ms"]
                for k in ("ort_int8", "ort_int8_conv1_float")
            },
        }
    lat = by_threads[args.threads]["latency_ms"]
    base = lat["torch_eager_fp32"]["median_ms"]
    result = {
        "name": "ptq_lenet5",
        "model": "zoo:lenet5",
        "data": f"npz:{args.data.name}",
        "train_config": train_cfg.model_dump(mode="json"),
        "quant_config": qcfg.model_dump(mode="json"),
        "machine": machine_info(onnxruntime=onnxruntime.__version__),
        "threads": args.threads,
        "batch_size": args.batch,
        "train_seconds": train_s,
        "quantize_seconds": quant_s,
        "folded_bn": report.folded_bn if report else None,
        "calibration_samples": report.calibration_samples if report else None,
        "test_error": err,
        "int8_minus_fp32_error_points": {
            "simulated": 100 * (err["int8_simulated"] - err["fp32_torch"]),
            "ort": 100 * (err["int8_ort"] - err["fp32_torch"]),
            "conv1_float_ort": 100 * (err["int8_conv1_float_ort"] - err["fp32_torch"]),
        },
        "target_error_gap_points": 100 * TARGET_ERROR_GAP,
        "meets_error_target": err["int8_ort"] - err["fp32_torch"] <= TARGET_ERROR_GAP + 1e-12,
        "ort_vs_simulated": {"top1_agreement": agree / n, "max_abs_logit_diff": max_diff},
        "latency_ms": lat,
        "speedup_vs_torch_eager_fp32": {k: base / v["median_ms"] for k, v in lat.items()},
        "int8_speedup_vs_ort_fp32": by_threads[args.threads]["int8_speedup_vs_ort_fp32"],
        "by_threads": by_threads,
        "load_average_at_end": os.getloadavg(),
        "ort_int8_ops": ort_int8.op_report().ops,
        "ort_int8_compute_fraction": ort_int8.op_report().int8_fraction,
        "ort_int8_conv1_float_ops": ort_ff.op_report().ops,
        "ort_fp32_ops": ort_fp32.op_report().ops,
        "onnx_bytes": {
            "fp32": fp32_onnx.path.stat().st_size,
            "int8": int8_onnx.path.stat().st_size,
            "int8_conv1_float": ff_onnx.path.stat().st_size,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("test_error", "int8_minus_fp32_error_points",
                                             "ort_vs_simulated", "speedup_vs_torch_eager_fp32",
                                             "int8_speedup_vs_ort_fp32", "by_threads", "ort_int8_ops")}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
