"""Benchmark: train LeNet-300-100 on MNIST with the ``lenet-mnist`` preset and record the result.

Target: test error <= 1.6% (Deep Compression's dense LeNet-300-100 baseline is 1.64%) in a few
minutes on 2 CPU cores. Writes ``benchmarks/results/train_lenet300.json``: name, config,
machine, versions, threads, per-seed wall seconds, per-epoch history and final test error, plus
the median over seeds (these machines are shared and noisy).

Run:  python benchmarks/train_lenet300.py [--seeds 0 1 2] [--epochs N] [--data PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine_info
from torch import nn

import torchshrink
from torchshrink.train.config import TrainConfig
from torchshrink.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist.npz"
OUT = ROOT / "benchmarks" / "results" / "train_lenet300.json"
TARGET_ERROR = 0.016


def make_model() -> nn.Module:
    """``zoo:lenet300`` (Flatten, 784-300-100-10 with ReLUs)."""
    from torchshrink.core.zoo import create_zoo_model

    return create_zoo_model("lenet300", num_classes=10, in_channels=1, input_size=28)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    data = torchshrink.load_data(f"npz:{args.data}")
    overrides: dict[str, Any] = {"num_threads": args.threads}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    runs = []
    for seed in args.seeds:
        config = TrainConfig.preset("lenet-mnist", seed=seed, **overrides)
        torch.manual_seed(seed)
        model = make_model()
        t0 = time.perf_counter()
        result = train(model, data, config)
        wall = time.perf_counter() - t0
        error = 1.0 - result.final_accuracy
        print(f"seed {seed}: test error {100 * error:.2f}% in {wall:.1f} s")
        runs.append(
            {
                "seed": seed,
                "wall_seconds": wall,
                "final_test_error": error,
                "best_test_error": 1.0 - result.best_accuracy,
                "epochs_run": result.epochs_run,
                "history": result.to_dict()["history"],
            }
        )
    errors = [r["final_test_error"] for r in runs]
    record = {
        "name": "train_lenet300",
        "model": "zoo:lenet300",
        "data": f"npz:{args.data.name}",
        "config": TrainConfig.preset("lenet-mnist", **overrides).model_dump(mode="json"),
        "machine": machine_info(),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "target_test_error": TARGET_ERROR,
        "median_test_error": statistics.median(errors),
        "max_test_error": max(errors),
        "median_wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
        "all_within_target": all(e <= TARGET_ERROR for e in errors),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"median test error {100 * record['median_test_error']:.2f}% "
        f"(target {100 * TARGET_ERROR:.1f}%), median {record['median_wall_seconds']:.1f} s; "
        f"wrote {args.out}"
    )


if __name__ == "__main__":
    main()
