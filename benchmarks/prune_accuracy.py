"""Benchmark: pruning accuracy on MNIST against the dense baseline, trained in the same run.

1. LeNet-300-100, unstructured magnitude pruning to 8% of the weights (global threshold,
   iterative: 3 rounds of prune + fine-tune). Target: test error within 0.1 points of dense.
2. LeNet-5, 50% of conv channels and fc1 neurons physically removed (L1 group importance,
   one-shot + fine-tune). Target: test error within 0.2 points of dense; the real latency
   speedup (batch 64, 2 threads, median of repeats) is reported beside the MAC reduction.

Writes ``benchmarks/results/prune_accuracy.json`` (config, machine, versions, metrics).

Run:  python benchmarks/prune_accuracy.py [--data PATH] [--epochs N] [--finetune-epochs N]
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


def lenet300(data: Any, epochs: int, ft_epochs: int) -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_zoo_model("lenet300")
    t0 = time.perf_counter()
    train(model, data, TrainConfig.preset("lenet-mnist", epochs=epochs, show_progress=False))
    dense_err, dense_s = _error(model, data), time.perf_counter() - t0
    ft = TrainConfig.preset("finetune", epochs=ft_epochs, lr=0.01, show_progress=False)
    cfg = PruneConfig(ratio=0.92, global_=True, schedule="iterative", steps=3, finetune=ft)
    r = prune(model, cfg, example_inputs=data.example_inputs(1), data=data)
    err = _error(model, data)
    return {
        "dense_error": dense_err,
        "pruned_error": err,
        "delta_points": 100 * (err - dense_err),
        "target_delta_points": 0.1,
        "met": 100 * (err - dense_err) <= 0.1,
        "weights_kept": 1 - r.sparsity,
        "nonzero_params": r.nonzero_after,
        "params": r.params_after,
        "per_layer_density": {
            n: float((p != 0).float().mean()) for n, p in model.named_parameters() if p.dim() > 1
        },
        "config": cfg.model_dump(mode="json", by_alias=True),
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
    ap.add_argument("--only", choices=["lenet300", "lenet5"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = torchshrink.load_data(f"npz:{args.data}")
    record: dict[str, Any] = {
        "name": "prune_accuracy",
        "machine": machine_info(),
        "versions": {"torch": torch.__version__, "torchshrink": torchshrink.__version__},
        "threads": 2,
        "dense_epochs": args.epochs,
        "finetune_epochs_per_round": args.finetune_epochs,
    }
    if args.only in (None, "lenet300"):
        record["lenet300_unstructured_8pct"] = lenet300(data, args.epochs, args.finetune_epochs)
        print(json.dumps(record["lenet300_unstructured_8pct"], indent=1, default=str), flush=True)
    if args.only in (None, "lenet5"):
        record["lenet5_structured_50pct"] = lenet5(data, args.epochs, args.finetune_epochs)
        print(json.dumps(record["lenet5_structured_50pct"], indent=1, default=str), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
