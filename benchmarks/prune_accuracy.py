"""Benchmark: pruning accuracy on MNIST against the dense baseline, trained in the same run.

1. LeNet-300-100, unstructured magnitude pruning to 8% of the weights (7.99%: fc1 7.78%,
   fc2 9%, fc3 26% kept, Han et al.'s per-layer fractions with fc1 a little sparser), with
   fine-tuning and distillation from the dense model. Target: test error within 0.1 points
   of dense. Protocol: 5,000 training images are held out (fixed split seed); the dense
   baseline (``lenet-mnist`` preset, 15 epochs, as before) and every pruned model train on
   the other 55,000. The fine-tuning schedule is chosen on the held-out images (seed 0) among
   ``CANDIDATES`` (AGP as before; weight decay off with AGP finishing at 50% of the run, i.e.
   a longer final fine-tune; Han-style iterative pruning, 3 prune + retrain rounds with a
   fresh cosine learning rate each). Then dense and pruned are run for seeds 0, 1, 2 and
   judged on the 10k test split (mean and each seed). LeNet-300-100 has no dropout layer, so
   Han et al.'s dropout adjustment does not apply. Recorded (1 thread, load 8-11, 27 min):
   validation error, dense 1.22%: AGP as before 1.66%, weight decay off + AGP done at 50%
   1.56% (chosen), iterative 1.66%. Test, seeds 0 / 1 / 2: dense 1.32 / 1.27 / 1.31%, pruned
   1.44 / 1.38 / 1.37%, +0.12 / +0.11 / +0.06 points: mean +0.097, within 0.1 on the mean
   but for only one seed of three (one test image is 0.01 points). Seeds 3 and 4, run after
   (``--seeds 3 4 --candidates 2``): +0.17 / +0.12, so over seeds 0-4 the mean is +0.116
   (sd 0.04): the target is not met robustly. Two more candidates, validation only (seed 0,
   ``--validation-only --candidates 2,7`` and ``8``, load 1-2): temperature 2 1.62%, an
   ensemble teacher (dense seeds 0-2, averaged logits; the student still starts from and is
   judged against seed 0's dense model) 1.60%, the chosen schedule re-run 1.56% (same as
   recorded). Neither beats it (the gaps are 2-3 of 5,000 images), so neither was run on the
   test split: the +0.116 mean over seeds 0-4 stands and the target is still not met.
2. LeNet-5, 50% of conv channels and fc1 neurons physically removed (L1 group importance,
   one-shot + fine-tune). Target: test error within 0.2 points of dense; the real latency
   speedup (batch 64, 2 threads, median of repeats) is reported beside the MAC reduction.

Writes ``benchmarks/results/prune_accuracy.json`` (config, machine, versions, metrics).

Run:  python benchmarks/prune_accuracy.py [--data PATH] [--epochs N] [--finetune-epochs N]
      [--seeds 0 1 2] [--candidates 0,2,5] [--scale F] [--only lenet300|lenet5]
      [--threads N] [--limit N (smoke runs)] [--validation-only] [--dense-cache DIR]
With ``--only``, the other model's entry already in the JSON is kept. ``--validation-only``
runs the trials on the held-out images and appends them to the LeNet-300-100 entry's
``validation_only`` list, leaving the recorded test result alone; ``--dense-cache`` saves the
dense models by seed so that parallel processes (and ensemble teachers) reuse them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from _common import machine_info
from torch.utils.data import TensorDataset

import torchshrink
from torchshrink.core.databundle import DataBundle
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
VAL_SIZE = 5000
SPLIT_SEED = 1234


def split_validation(data: DataBundle) -> tuple[DataBundle, DataBundle]:
    """``(55k train / 5k validation, 55k train / test)``: the 5k are held out of training."""
    x, y = data.train.tensors  # type: ignore[attr-defined]
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_val = min(VAL_SIZE, len(y) // 5)  # smaller only for --limit smoke runs
    val, tr = idx[:n_val], idx[n_val:]
    train_ds = TensorDataset(x[tr], y[tr])
    meta = {**data.meta, "validation": f"{VAL_SIZE} held out, split seed {SPLIT_SEED}"}
    select = replace(data, train=train_ds, test=TensorDataset(x[val], y[val]), meta=meta)
    return select, replace(data, train=train_ds, meta=meta)


@dataclass(frozen=True)
class Schedule:
    """One fine-tuning schedule for the 8% run (all share the ratios and the dense model)."""

    name: str
    schedule: str = "agp"  # "agp" or "iterative"
    steps: int = 1  # iterative rounds (each a fresh cosine: restarts)
    epochs: int = 20  # fine-tuning epochs in all (split over the rounds)
    lr: float = 0.02
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    alpha: float = 0.7  # distillation weight (0: no teacher)
    temperature: float = 4.0
    agp_end: float = 0.75  # fraction of the fine-tuning where AGP reaches the ratio
    teachers: int = 1  # >1: the teacher averages the logits of dense seeds seed..seed+n-1


# The schedules compared on the validation split (indices for --candidates). Each gets the
# same fine-tuning budget in epochs; iterative rounds share it (a fresh cosine per round).
CANDIDATES = [
    Schedule("agp (previous)"),
    Schedule("agp wd0", weight_decay=0.0),
    Schedule("agp wd0 end50%", weight_decay=0.0, agp_end=0.5),
    Schedule("agp wd0 T2", weight_decay=0.0, temperature=2.0),
    Schedule("agp wd0 lr0.05", weight_decay=0.0, lr=0.05),
    Schedule("iterative3 wd0 (Han, cosine restarts)", "iterative", 3, weight_decay=0.0),
    Schedule("iterative5 wd0 (Han, cosine restarts)", "iterative", 5, weight_decay=0.0),
    Schedule("agp wd0 end50% T2", weight_decay=0.0, agp_end=0.5, temperature=2.0),
    # The student still starts from (and is judged against) the dense model of its own seed.
    Schedule("agp wd0 end50% ensemble3", weight_decay=0.0, agp_end=0.5, teachers=3),
]
DEFAULT_CANDIDATES = "0,2,5"  # what the recorded run compared (CPU time on a shared machine)


DENSE_CACHE: Path | None = None  # --dense-cache: reuse dense models across processes


def dense_lenet300(data: DataBundle, epochs: int, threads: int, seed: int) -> torch.nn.Module:
    """The dense baseline, trained exactly as before (lenet-mnist preset) on ``data.train``."""
    torch.manual_seed(seed)
    model = create_zoo_model("lenet300")
    # Keyed by everything that changes the training run, so a cached model is the same one.
    n = len(data.train)  # type: ignore[arg-type]
    cached = DENSE_CACHE / f"dense_s{seed}_e{epochs}_n{n}.pt" if DENSE_CACHE else None
    if cached is not None and cached.exists():
        model.load_state_dict(torch.load(cached, weights_only=True))
        return model
    cfg = TrainConfig.preset(
        "lenet-mnist",
        epochs=epochs,
        seed=seed,
        show_progress=False,
        num_threads=threads,
        eval_every=100,
    )
    train(model, data, cfg)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), cached)
    return model


def prune_lenet300(
    dense: torch.nn.Module,
    data: DataBundle,
    s: Schedule,
    threads: int,
    *,
    seed: int,
    ratios: dict[str, float],
    scale: float = 1.0,
    others: tuple[torch.nn.Module, ...] = (),
) -> tuple[torch.nn.Module, Any]:
    """A pruned copy of ``dense`` (8% of its weights) fine-tuned on ``data.train`` by ``s``.

    ``others``: further dense models whose logits the teacher averages with ``dense``'s.
    """
    model = copy.deepcopy(dense)
    teacher = [copy.deepcopy(m).eval() for m in (dense, *others)]
    epochs = max(s.steps, round(s.epochs * scale))
    per_round = max(1, epochs // s.steps)
    ft = TrainConfig.preset(
        "finetune",
        epochs=per_round,
        lr=s.lr,
        weight_decay=s.weight_decay,
        label_smoothing=s.label_smoothing,
        ce_weight=1.0 - s.alpha,  # the loop's cross-entropy; the soft targets get alpha
        seed=seed,
        show_progress=False,
        num_threads=threads,
        eval_every=100,
    )
    extra: dict[str, Any] = {}
    if s.schedule == "agp":
        total = len(data.loader("train", batch_size=ft.batch_size)) * per_round
        extra["agp_end_step"] = max(1, int(s.agp_end * total))
    cfg = PruneConfig(
        ratio=0.92,
        layer_ratios=ratios,
        schedule=s.schedule,
        steps=s.steps,
        finetune=ft,
        seed=seed,
        **extra,
    )
    kd = DistillConfig(alpha=s.alpha, temperature=s.temperature)
    terms = distill_loss_terms(model, teacher, kd) if s.alpha > 0 else []
    r = prune(model, cfg, example_inputs=data.example_inputs(1), data=data, loss_terms=terms)
    return model, r


def _kept(model: torch.nn.Module) -> float:
    w = [p for p in model.parameters() if p.dim() > 1]
    return sum(int((p != 0).sum()) for p in w) / sum(p.numel() for p in w)


def _others(
    s: Schedule, data: DataBundle, epochs: int, threads: int, seed: int
) -> tuple[torch.nn.Module, ...]:
    """The extra ensemble members of ``s``'s teacher: dense seeds seed+1 .. seed+n-1."""
    return tuple(dense_lenet300(data, epochs, threads, seed + k) for k in range(1, s.teachers))


def lenet300(
    data: DataBundle,
    epochs: int,
    threads: int,
    *,
    ratios: dict[str, float],
    seeds: list[int],
    candidates: list[Schedule],
    scale: float = 1.0,
    validation_only: bool = False,
) -> dict[str, Any]:
    """Pick a schedule on the 5k validation split (seed 0), then test it over ``seeds``.

    With ``validation_only`` the test split is not looked at: only the trials are returned.
    """
    select, final = split_validation(data)
    t0 = time.perf_counter()
    dense0 = dense_lenet300(select, epochs, threads, seeds[0])
    dense_val = _error(dense0, select)
    print(f"  dense seed {seeds[0]}: val {100 * dense_val:.2f}%", flush=True)
    trials, pruned = [], []
    for s in candidates:
        t = time.perf_counter()
        others = _others(s, select, epochs, threads, seeds[0])
        model, r = prune_lenet300(
            dense0, select, s, threads, seed=seeds[0], ratios=ratios, scale=scale, others=others
        )
        err = _error(model, select)
        pruned.append((model, r))
        trials.append(
            {
                **asdict(s),
                "val_error": err,
                "val_delta_points": 100 * (err - dense_val),
                "weights_kept": _kept(model),
                "finetune_epochs": r.config.finetune.epochs * s.steps,  # type: ignore[union-attr]
                "seconds": time.perf_counter() - t,
            }
        )
        print(f"  {s.name}: val {100 * err:.2f}% (dense {100 * dense_val:.2f}%)", flush=True)
    if validation_only:
        return {"dense_val_error": dense_val, "trials": trials, "seconds": time.perf_counter() - t0}
    best = min(range(len(candidates)), key=lambda i: (trials[i]["val_error"], i))
    chosen = candidates[best]
    runs = []
    for seed in seeds:  # the test split is looked at only here, after the choice
        if seed == seeds[0]:  # the same training run as its trial (same data, seed, dense)
            dense, (model, r) = dense0, pruned[best]
        else:
            dense = dense_lenet300(select, epochs, threads, seed)
            others = _others(chosen, select, epochs, threads, seed)
            model, r = prune_lenet300(
                dense, final, chosen, threads, seed=seed, ratios=ratios, scale=scale, others=others
            )
        d_err, p_err = _error(dense, final), _error(model, final)
        runs.append(
            {
                "seed": seed,
                "dense_test_error": d_err,
                "pruned_test_error": p_err,
                "delta_points": 100 * (p_err - d_err),
                "dense_val_error": _error(dense, select),
                "weights_kept": _kept(model),
                "params_kept": 1 - r.sparsity,
                "per_layer_density": {
                    n: float((p != 0).float().mean())
                    for n, p in model.named_parameters()
                    if p.dim() > 1
                },
            }
        )
        print(f"  seed {seed}: dense {100 * d_err:.2f}% pruned {100 * p_err:.2f}%", flush=True)
    mean = statistics.fmean
    delta = mean(r["delta_points"] for r in runs)
    kept = max(r["weights_kept"] for r in runs)
    return {
        "protocol": (
            f"dense (lenet-mnist preset, {epochs} epochs) and pruned models train on 55k images; "
            f"the schedule is chosen on the {VAL_SIZE} held-out images (seed {seeds[0]}), then "
            f"the chosen schedule is run for seeds {seeds} and judged on the 10k test split"
        ),
        "selection": {"dense_val_error": dense_val, "trials": trials, "chosen": chosen.name},
        "chosen_schedule": asdict(chosen),
        "runs": runs,
        "dense_test_error_mean": mean(r["dense_test_error"] for r in runs),
        "pruned_test_error_mean": mean(r["pruned_test_error"] for r in runs),
        "delta_points_mean": delta,
        "delta_points_per_seed": [r["delta_points"] for r in runs],
        "target_delta_points": 0.1,
        "met_mean": delta <= 0.1 + 1e-9 and kept <= 0.08,
        "met_every_seed": all(r["delta_points"] <= 0.1 + 1e-9 for r in runs) and kept <= 0.08,
        "weights_kept": kept,
        "ratios": ratios,
        "dropout": "not applicable: LeNet-300-100 has no dropout layer",
        "seconds": time.perf_counter() - t0,
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
    ap.add_argument("--finetune-epochs", type=int, default=4, help="LeNet-5, per round")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply fine-tuning epochs")
    ap.add_argument("--candidates", default=DEFAULT_CANDIDATES, help="indices into CANDIDATES")
    ap.add_argument("--limit", type=int, default=None, help="images per split (smoke tests)")
    ap.add_argument("--only", choices=["lenet300", "lenet5", "none"], default=None)
    ap.add_argument("--lenet300-ratios", default=None, help="fc1=0.92,fc2=0.91,fc3=0.74")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--validation-only", action="store_true", help="trials only, no test split")
    ap.add_argument("--dense-cache", default=None, help="folder to save / reuse dense models")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    out = Path(args.out)
    ratios = RATIOS
    if args.lenet300_ratios:
        ratios = {k: float(v) for k, v in (kv.split("=") for kv in args.lenet300_ratios.split(","))}
    candidates = [CANDIDATES[int(i)] for i in args.candidates.split(",")]
    torch.set_num_threads(args.threads)
    global DENSE_CACHE
    DENSE_CACHE = Path(args.dense_cache) if args.dense_cache else None
    data = torchshrink.load_data(f"npz:{args.data}")
    if args.limit:
        lim = args.limit
        cut = [TensorDataset(*(t[:lim] for t in ds.tensors)) for ds in (data.train, data.test)]
        data = replace(data, train=cut[0], test=cut[1])
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
    if args.validation_only:  # new candidates beside the recorded entry, which stays
        entry = lenet300(
            data,
            args.epochs,
            args.threads,
            ratios=ratios,
            seeds=args.seeds[:1],
            candidates=candidates,
            scale=args.scale,
            validation_only=True,
        )
        entry["command"] = " ".join(sys.argv[1:])
        entry["loadavg_end"] = list(os.getloadavg())
        l300 = record.setdefault("lenet300_unstructured_8pct", {})
        l300.setdefault("validation_only", []).append(entry)
        print(json.dumps(entry, indent=1, default=str), flush=True)
        args.only = "none"
    if args.only in (None, "lenet300"):
        for old in ("lenet300_finetune_epochs", "notes"):  # earlier attempts stay
            record.pop(old, None)
        entry = lenet300(
            data,
            args.epochs,
            args.threads,
            ratios=ratios,
            seeds=args.seeds,
            candidates=candidates,
            scale=args.scale,
        )
        entry["command"] = " ".join(sys.argv[1:])
        record["lenet300_unstructured_8pct"] = entry
        record["lenet300_loadavg_end"] = list(os.getloadavg())
        print(json.dumps(entry, indent=1, default=str), flush=True)
    if args.only in (None, "lenet5"):
        record["lenet5_structured_50pct"] = lenet5(data, args.epochs, args.finetune_epochs)
        record["finetune_epochs_per_round"] = args.finetune_epochs
        print(json.dumps(record["lenet5_structured_50pct"], indent=1, default=str), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
