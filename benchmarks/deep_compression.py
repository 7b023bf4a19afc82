"""Benchmark: Deep Compression of LeNet-300-100 and LeNet-5 on MNIST, stage by stage.

For each model: train a dense baseline (``TrainConfig.preset("lenet-mnist")``, fewer epochs for
LeNet-5 on this slow shared CPU, or reuse saved weights with ``--lenet5-weights``), then run
:func:`torchshrink.pipeline.deep_compression` at one or more settings and record per stage the
test error, non-zero parameters, file bytes and the compression ratio (dense fp32 bytes of
every floating-point tensor / bytes of the whole Huffman-coded model file).

Published (Han et al. 2016): LeNet-300-100 40x at 1.58% error (baseline 1.64%), pruned to 8%
(fc1 8%, fc2 9%, fc3 26% kept); LeNet-5 39x at 0.74% (baseline 0.80%), pruned to 8%
(conv1 66%, conv2 12%, fc1 8%, fc2 19% kept); 5-bit fc and 8-bit conv codebooks.
Target (issue 5): at least 60x with test error within 0.1 points of our dense baseline.

Run:  python benchmarks/deep_compression.py [--models lenet300,lenet5] [--baseline-epochs N]
      [--lenet5-epochs N] [--prune-epochs N] [--centroid-epochs N] [--lenet5-weights FILE]
Writes benchmarks/results/deep_compression.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine_info

import torchshrink
from torchshrink.pipeline import DeepCompressionConfig, deep_compression
from torchshrink.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("MNIST_NPZ", str(ROOT.parent / "shared" / "data" / "mnist.npz"))
OUT = ROOT / "benchmarks" / "results" / "deep_compression.json"

PUBLISHED = {
    "lenet300": {"ratio": 40, "error": 0.0158, "baseline_error": 0.0164},
    "lenet5": {"ratio": 39, "error": 0.0074, "baseline_error": 0.0080},
}
# Fractions removed per layer. "paper": Deep Compression's kept fractions; the others push on.
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "lenet300": {
        "paper": {"layer_ratios": {"fc1": 0.92, "fc2": 0.91, "fc3": 0.74}},
        "aggressive": {
            "layer_ratios": {"fc1": 0.96, "fc2": 0.94, "fc3": 0.80},
            "layer_bits": {"fc3": 5, "fc.*": 4},
        },
    },
    "lenet5": {
        "paper": {"layer_ratios": {"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81}},
        "aggressive": {
            "layer_ratios": {"conv1": 0.5, "conv2": 0.92, "fc1": 0.96, "fc2": 0.85},
            "layer_bits": {"conv.*": 5, "fc2": 5, "fc1": 4},
        },
    },
}


def _baseline(name: str, data: Any, epochs: int, weights: str | None) -> tuple[Any, dict[str, Any]]:
    torch.manual_seed(0)
    model = torchshrink.load_model(f"zoo:{name}")
    t0 = time.perf_counter()
    if weights:
        model = torchshrink.load_model(f"zoo:{name}", weights=Path(weights))
        how = f"weights from {weights}"
    else:
        cfg = TrainConfig.preset(
            "lenet-mnist", epochs=epochs, show_progress=False, eval_every=epochs
        )
        torchshrink.train(model, data, cfg)
        how = f"lenet-mnist preset, {epochs} epochs"
    acc = torchshrink.evaluate(model, data.test).accuracy
    return model, {"how": how, "error": 1 - acc, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet300,lenet5")
    ap.add_argument("--settings", default="paper,aggressive")
    ap.add_argument("--baseline-epochs", type=int, default=15)
    ap.add_argument("--lenet5-epochs", type=int, default=3)
    ap.add_argument("--lenet5-weights", default=None)
    ap.add_argument("--prune-steps", type=int, default=3)
    ap.add_argument("--prune-epochs", type=int, default=2)
    ap.add_argument("--centroid-epochs", type=int, default=2)
    ap.add_argument("--centroid-lr", type=float, default=1e-3)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = torchshrink.load_data(f"npz:{DATA}")
    out = Path(args.out)
    record: dict[str, Any] = (
        json.loads(out.read_text()) if out.exists() else {"name": "deep_compression"}
    )
    record.update({"data": "npz:mnist.npz", "machine": machine_info(), "published": PUBLISHED})
    record.setdefault("models", {})
    tmp = Path(tempfile.mkdtemp(prefix="dc_bench_"))
    for name in args.models.split(","):
        epochs = args.baseline_epochs if name == "lenet300" else args.lenet5_epochs
        weights = args.lenet5_weights if name == "lenet5" else None
        model, base = _baseline(name, data, epochs, weights)
        torchshrink.save(model, tmp / f"{name}_dense.safetensors")
        print(f"{name}: baseline error {100 * base['error']:.2f}% ({base['how']})", flush=True)
        runs: dict[str, Any] = {}
        for setting in args.settings.split(","):
            dense = torchshrink.load(tmp / f"{name}_dense.safetensors")
            cfg = DeepCompressionConfig(
                prune_steps=args.prune_steps,
                prune_finetune=TrainConfig.preset(
                    "finetune", epochs=args.prune_epochs, show_progress=False
                ),
                centroid_finetune=TrainConfig.preset(
                    "finetune", epochs=args.centroid_epochs, lr=args.centroid_lr,
                    show_progress=False,
                ),
                **SETTINGS[name][setting],
            )  # fmt: skip
            t0 = time.perf_counter()
            r = deep_compression(dense, data, config=cfg, path=tmp / f"{name}_{setting}.ts")
            run = r.to_dict()
            run["seconds"] = time.perf_counter() - t0
            final = r.stages[-1]
            run["error_gap_points"] = 100 * (final.error - base["error"])
            run["meets_target"] = r.ratio >= 60 and run["error_gap_points"] <= 0.1
            runs[setting] = run
            for s in r.stages:
                print(
                    f"  {setting:10s} {s.stage:9s} error {100 * s.error:5.2f}%  "
                    f"nonzeros {s.nonzeros:7d}  bytes {s.file_bytes:8d}  ratio {s.ratio:6.1f}x",
                    flush=True,
                )
        record["models"][name] = {"baseline": base, "runs": runs}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
