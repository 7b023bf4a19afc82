"""Hinton-style distillation on MNIST: a small student trained alone vs distilled from a teacher.

Teacher: LeNet-300-100 (``zoo:lenet300``). Student: 784-30-30-10 MLP (about 25k parameters,
a tenth of the teacher). Every model trains with the ``lenet-mnist`` preset for the same number
of epochs; the distilled students use ``alpha = 0.9`` at a few temperatures (Hinton et al. used
T = 20 on MNIST) with the teacher's logits cached. Test errors (out of 10,000) and the fraction
of the student-teacher gap closed by distillation are written to
``benchmarks/results/distill_mnist.json``.

Usage:
    python benchmarks/distill_mnist.py [--epochs 10] [--temperatures 4 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import machine_info
from torch import nn

import torchshrink
from torchshrink.distill import DistillConfig, agreement, distill
from torchshrink.train import TrainConfig, train

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
OUT = Path(__file__).resolve().parent / "results" / "distill_mnist.json"


def student(seed: int, hidden: int = 30) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, 10),
    )  # fmt: skip


def errors(model: nn.Module, data: torchshrink.DataBundle) -> int:
    r = torchshrink.evaluate(model, data.test)
    return round(r.error * r.n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[4.0, 20.0])
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--hidden", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=f"npz:{MNIST}")
    args = ap.parse_args()

    data = torchshrink.load_data(args.data)
    cfg = TrainConfig.preset(
        "lenet-mnist", epochs=args.epochs, show_progress=False, num_threads=args.threads
    )
    t0 = time.perf_counter()
    torch.manual_seed(0)
    teacher = torchshrink.load_model("zoo:lenet300")
    train(teacher, data, cfg)
    teacher_errors = errors(teacher, data)
    runs = [{"name": "teacher lenet300", "test_errors": teacher_errors,
             "params": sum(p.numel() for p in teacher.parameters()),
             "seconds": time.perf_counter() - t0}]  # fmt: skip
    print(runs[-1], flush=True)

    t0 = time.perf_counter()
    alone = student(1, args.hidden)
    train(alone, data, cfg)
    alone_errors = errors(alone, data)
    runs.append({"name": "student alone", "test_errors": alone_errors,
                 "params": sum(p.numel() for p in alone.parameters()),
                 "agreement": agreement(alone, teacher, data.test),
                 "seconds": time.perf_counter() - t0})  # fmt: skip
    print(runs[-1], flush=True)

    for temperature in args.temperatures:
        t0 = time.perf_counter()
        s = student(1, args.hidden)
        config = DistillConfig(temperature=temperature, alpha=args.alpha, cache=True)
        distill(s, teacher, data, config, train_config=cfg)
        e = errors(s, data)
        gap = alone_errors - teacher_errors
        runs.append({"name": f"student distilled T={temperature:g}", "test_errors": e,
                     "temperature": temperature, "alpha": args.alpha,
                     "agreement": agreement(s, teacher, data.test),
                     "gap_closed": (alone_errors - e) / gap if gap > 0 else None,
                     "seconds": time.perf_counter() - t0})  # fmt: skip
        print(runs[-1], flush=True)

    record = {
        "name": "distill_mnist",
        "config": {
            "epochs": args.epochs,
            "train_preset": "lenet-mnist",
            "student_hidden": args.hidden,
            "alpha": args.alpha,
            "threads": args.threads,
        },
        "machine": machine_info(),
        "versions": {"torch": torch.__version__, "torchshrink": torchshrink.__version__},
        "reference": "Hinton et al. 2015: student 146 errors alone, 74 distilled (T=20), "
        "teacher 67 (784-1200-1200-10 with dropout; student 784-800-800-10)",
        "runs": runs,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
