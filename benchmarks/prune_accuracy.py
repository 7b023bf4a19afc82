"""Benchmark: pruning accuracy on MNIST against the dense baseline, trained in the same run.

1. LeNet-300-100, unstructured magnitude pruning to 8% of the weights with Han et al.'s
   per-layer fractions (fc1 8%, fc2 9%, fc3 26% kept), AGP (the sparsity rises gradually over
   the first 75% of one long fine-tuning run) with distillation from the dense model (soft
   targets, alpha 0.7, T 4) and label smoothing. Target: test error within 0.1 points of dense.
2. LeNet-5, 50% of conv channels and fc1 neurons physically removed (L1 group importance,
   one-shot + fine-tune). Target: test error within 0.2 points of dense; the real latency
   speedup (batch 64, 2 threads, median of repeats) is reported beside the MAC reduction.

Writes ``benchmarks/results/prune_accuracy.json`` (config, machine, versions, metrics).

Run:  python benchmarks/prune_accuracy.py [--data PATH] [--epochs N] [--finetune-epochs N]
      [--lenet300-finetune-epochs N] [--only lenet300|lenet5] [--threads N]
With ``--only``, the other model's entry already in the JSON is kept.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine_info

import torchshrink
from torchshrink.core.zoo import create_zoo_model
from torchshrink.distill import DistillConfig, distill_loss_terms
from torchshrink.measure.accuracy import evaluate
from torchshrink.measure.latency import measure_latency
from torchshrink.measure.macs import count_macs
from torchshrink.prune import PruneConfig, prune
from torchshrink.train.config import TrainConfig
from torchshrink.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist.npz"
OUT = ROOT / "benchmarks" / "results" / "prune_accuracy.json"


def _error(model: torch.nn.Module, data: Any) -> float:
    return evaluate(model, data.test).error


def _latency(model: torch.nn.Module, x: torch.Tensor) -> float:
    return measure_latency(model, x, threads=2, warmup=5, repeats=50).p50_ms


# Fractions removed. Han et al.'s kept 8% / 9% / 26% is 8.18% of all weights; fc1 a little
# sparser makes it 7.99%.
RATIOS = {"fc1": 0.9222, "fc2": 0.91, "fc3": 0.74}
KD = DistillConfig(alpha=0.7, temperature=4.0)


def lenet300(
    data: Any,
    epochs: int,
    ft_epochs: int,
    threads: int,
    *,
    ratios: dict[str, float],
    weights: str | None = None,
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_zoo_model("lenet300")
    t0 = time.perf_counter()
    cfg0 = TrainConfig.preset(
        "lenet-mnist", epochs=epochs, show_progress=False, num_threads=threads, eval_every=100
    )
    how = f"lenet-mnist preset, {epochs} epochs, seed 0, {threads} thread(s)"
    if weights:  # the same training run saved earlier (it takes minutes on a busy CPU)
        model = torchshrink.load(Path(weights))
        how = f"weights from {weights} ({how})"
    else:
        train(model, data, cfg0)
    dense_err, dense_s = _error(model, data), time.perf_counter() - t0
    teacher = copy.deepcopy(model).eval()
    ft = TrainConfig.preset(
        "finetune",
        epochs=ft_epochs,
        lr=0.02,
        label_smoothing=0.1,
        ce_weight=1.0 - KD.alpha,  # the loop's cross-entropy; the soft targets get alpha
        show_progress=False,
        num_threads=threads,
        eval_every=100,
    )
    cfg = PruneConfig(ratio=0.92, layer_ratios=ratios, schedule="agp", finetune=ft)
    terms = distill_loss_terms(model, teacher, KD)
    r = prune(model, cfg, example_inputs=data.example_inputs(1), data=data, loss_terms=terms)
    err = _error(model, data)
    w = [p for p in model.parameters() if p.dim() > 1]
    kept = sum(int((p != 0).sum()) for p in w) / sum(p.numel() for p in w)
    return {
        "dense": how,
        "dense_error": dense_err,
        "pruned_error": err,
        "delta_points": 100 * (err - dense_err),
        "target_delta_points": 0.1,
        "met": 100 * (err - dense_err) <= 0.1 + 1e-9 and kept <= 0.08,
        "weights_kept": kept,
        "params_kept": 1 - r.sparsity,
        "nonzero_params": r.nonzero_after,
        "params": r.params_after,
        "per_layer_density": {
            n: float((p != 0).float().mean()) for n, p in model.named_parameters() if p.dim() > 1
        },
        "distill": KD.model_dump(mode="json"),
        "config": r.config.model_dump(mode="json", by_alias=True),
        "dense_train_seconds": dense_s,
        "prune_seconds": r.seconds,
    }


def lenet5(data: Any, epochs: int, ft_epochs: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_zoo_model("lenet5")
    train(model, data, TrainConfig.preset("lenet-mnist", epochs=epochs, show_progress=False))
    dense_err = _error(model, data)
    dense = copy.deepcopy(model).eval()
    ft = TrainConfig.preset("finetune", epochs=ft_epochs, lr=0.01, show_progress=False)
    cfg = PruneConfig(granularity="channel", ratio=0.5, finetune=ft)
    r = prune(model, cfg, example_inputs=data.example_inputs(1), data=data)
    err = _error(model, data)
    x = data.example_inputs(64)
    lat = [(_latency(dense, x), _latency(model.eval(), x)) for _ in range(3)]
    lat_d = sorted(a for a, _ in lat)[1]
    lat_p = sorted(b for _, b in lat)[1]
    macs_d, macs_p = count_macs(dense, x).macs, count_macs(model, x).macs
    return {
        "dense_error": dense_err,
        "pruned_error": err,
        "delta_points": 100 * (err - dense_err),
        "target_delta_points": 0.2,
        "met": 100 * (err - dense_err) <= 0.2,
        "changes": r.changes,
        "params_dense": r.params_before,
        "params_pruned": r.params_after,
        "mac_reduction": macs_d / macs_p,
        "latency_ms_dense_b64": lat_d,
        "latency_ms_pruned_b64": lat_p,
        "speedup": lat_d / lat_p,
        "speedup_efficiency": (lat_d / lat_p) / (macs_d / macs_p),
        "config": cfg.model_dump(mode="json", by_alias=True),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--epochs", type=int, default=15, help="dense training epochs")
    ap.add_argument("--finetune-epochs", type=int, default=4, help="per pruning round")
    ap.add_argument("--lenet300-finetune-epochs", type=int, default=45, help="one AGP run")
    ap.add_argument("--only", choices=["lenet300", "lenet5"], default=None)
    ap.add_argument("--lenet300-ratios", default=None, help="fc1=0.92,fc2=0.91,fc3=0.74")
    ap.add_argument("--lenet300-weights", default=None, help="dense weights trained as above")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    out = Path(args.out)
    ratios = RATIOS
    if args.lenet300_ratios:
        ratios = {k: float(v) for k, v in (kv.split("=") for kv in args.lenet300_ratios.split(","))}
    torch.set_num_threads(args.threads)
    data = torchshrink.load_data(f"npz:{args.data}")
    # Keep the other model's entry when only one is run.
    record: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    record.update(
        {
            "name": "prune_accuracy",
            "machine": machine_info(),
            "versions": {"torch": torch.__version__, "torchshrink": torchshrink.__version__},
            "threads": args.threads,
            "dense_epochs": args.epochs,
        }
    )
    if args.only in (None, "lenet300"):
        record["lenet300_unstructured_8pct"] = lenet300(
            data,
            args.epochs,
            args.lenet300_finetune_epochs,
            args.threads,
            ratios=ratios,
            weights=args.lenet300_weights,
        )
        record["lenet300_finetune_epochs"] = args.lenet300_finetune_epochs
        print(json.dumps(record["lenet300_unstructured_8pct"], indent=1, default=str), flush=True)
    if args.only in (None, "lenet5"):
        record["lenet5_structured_50pct"] = lenet5(data, args.epochs, args.finetune_epochs)
        record["finetune_epochs_per_round"] = args.finetune_epochs
        print(json.dumps(record["lenet5_structured_50pct"], indent=1, default=str), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
