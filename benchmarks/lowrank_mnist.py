"""Low-rank factorization at a 2x parameter reduction on MNIST: LeNet-300-100 and LeNet-5.

Each model (``zoo:lenet300``, ``zoo:lenet5``) is trained dense with the ``scratch`` preset, then
:func:`torchshrink.lowrank.factorize` replaces its layers by low-rank forms (truncated SVD for
Linear, Tucker-2 for the 5x5 convolutions) in two variants that both make the whole model 2x
smaller: every layer shrunk 2x (``ratio=2``), and the classifier kept dense with the other
layers shrunk just enough more. The latency rule is off (``max_latency_ratio=None``) so that
the parameter target, not the timer, decides; latency is reported instead. For the dense and
the factorized models the record holds test errors (out of 10,000) before and after a short
fine-tune (``finetune`` preset), parameters, MACs of one image, and the median latency of a
batch of 64 on one thread.
Results: ``benchmarks/results/lowrank_mnist.json``.

Usage:
    python benchmarks/lowrank_mnist.py [--models lenet300 lenet5] [--epochs 8 4]
        [--finetune-epochs 2] [--ratio 2.0]
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
from torch import nn

import torchshrink
from torchshrink.lowrank import FactorizeConfig, factorize
from torchshrink.measure.latency import measure_latency
from torchshrink.measure.macs import count_macs
from torchshrink.train import TrainConfig, train

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
OUT = Path(__file__).resolve().parent / "results" / "lowrank_mnist.json"


def errors(model: nn.Module, data: torchshrink.DataBundle) -> int:
    r = torchshrink.evaluate(model, data.test)
    return round(r.error * r.n)


def facts(model: nn.Module, batch: torch.Tensor, *, repeats: int) -> dict[str, Any]:
    """Parameters, MACs of one image and the median 1-thread latency of ``batch``."""
    lat = measure_latency(model, batch, threads=1, warmup=5, repeats=repeats, max_seconds=30.0)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "macs_per_image": count_macs(model, batch[:1]).macs,
        "latency_p50_ms": lat.p50_ms,
        "latency_p90_ms": lat.p90_ms,
        "latency_batch": lat.batch_size,
        "latency_threads": lat.threads,
    }


def fit_ratio(model: nn.Module, batch: torch.Tensor, ignore: list[str], target: float) -> float:
    """Smallest per-layer ratio (steps of 0.05) that shrinks the whole model ``target``-fold."""
    ratio = target
    while ratio < 4 * target:
        config = FactorizeConfig(ratio=ratio, ignore=ignore, max_latency_ratio=None)
        if factorize(copy.deepcopy(model), config, example_inputs=batch).ratio >= target:
            return ratio
        ratio = round(ratio + 0.05, 2)
    return ratio


def variant(
    dense: nn.Module, data: Any, batch: torch.Tensor, ignore: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Factorize a copy of ``dense`` (layers in ``ignore`` stay dense), fine-tune, measure."""
    model = copy.deepcopy(dense)
    ratio = fit_ratio(dense, batch, ignore, args.ratio) if ignore else args.ratio
    config = FactorizeConfig(ratio=ratio, ignore=ignore, als_iters=2, max_latency_ratio=None)
    report = factorize(model, config, example_inputs=batch)
    out: dict[str, Any] = {"kept_dense": ignore, "layer_ratio": ratio}
    out["test_errors_before_finetune"] = errors(model, data)
    t0 = time.perf_counter()
    ft = TrainConfig.preset("finetune", epochs=args.finetune_epochs, show_progress=False,
                            num_threads=args.threads, seed=args.seed,
                            eval_every=args.finetune_epochs)  # fmt: skip
    train(model, data, ft)
    out["test_errors"] = errors(model, data)
    out["finetune_seconds"] = time.perf_counter() - t0
    out.update(facts(model, batch, repeats=args.repeats))
    out["factorize"] = report.to_dict()
    return out


def bench(name: str, epochs: int, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    common = {"show_progress": False, "num_threads": args.threads, "seed": args.seed}
    torch.manual_seed(args.seed)
    model = torchshrink.load_model(f"zoo:{name}")
    t0 = time.perf_counter()
    train(model, data, TrainConfig.preset("scratch", epochs=epochs, eval_every=epochs, **common))
    train_s = time.perf_counter() - t0
    batch = torch.stack([data.test[i][0] for i in range(64)])  # (64, 1, 28, 28)
    dense = {"test_errors": errors(model, data), **facts(model, batch, repeats=args.repeats)}
    print(name, "dense", dense, flush=True)
    # Two ways to reach 2x: every layer shrunk 2x (the classifier too, which costs accuracy:
    # a rank-4 map to 10 classes), or the classifier kept dense and the others shrunk a little
    # more than 2x so that the whole model still is 2x smaller.
    classifier = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    variants = {}
    for label, ignore in (("all_layers", []), ("classifier_dense", [classifier])):
        v = variant(model, data, batch, ignore, args)
        v["param_reduction"] = dense["params"] / v["params"]
        v["mac_reduction"] = dense["macs_per_image"] / v["macs_per_image"]
        v["speedup_p50"] = dense["latency_p50_ms"] / v["latency_p50_ms"]
        print(name, label, {k: x for k, x in v.items() if k != "factorize"}, flush=True)
        variants[label] = v
    return {
        "model": f"zoo:{name}",
        "train_epochs": epochs,
        "train_seconds": train_s,
        "finetune_epochs": args.finetune_epochs,
        "dense": dense,
        "lowrank": variants,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["lenet300", "lenet5"])
    ap.add_argument("--epochs", type=int, nargs="+", default=[8, 4], help="dense, per model")
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--ratio", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=50, help="timed latency repeats")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=f"npz:{MNIST}")
    ap.add_argument("--limit", type=int, default=None, help="samples per split (smoke runs)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if len(args.epochs) != len(args.models):
        ap.error("--epochs needs one value per model")
    torch.set_num_threads(args.threads)
    data = torchshrink.load_data(args.data, limit=args.limit)
    results = [bench(m, e, data, args) for m, e in zip(args.models, args.epochs, strict=True)]
    record = {
        "name": "lowrank_mnist",
        "config": vars(args),
        "machine": machine_info(),
        "method": "factorize(ratio=2): truncated SVD for Linear, Tucker-2 (HOSVD + 2 HOOI "
        "sweeps) for kxk Conv2d; fine-tune with the 'finetune' preset",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
