"""Benchmark: pruning accuracy on MNIST against the dense baseline, trained in the same run.

1. LeNet-300-100, unstructured magnitude pruning to 8% of the weights (7.99%: fc1 7.78%,
   fc2 9%, fc3 26% kept, Han et al.'s per-layer fractions with fc1 a little sparser), with
   fine-tuning and distillation. Target: test error within 0.1 points of our own dense
   baseline. Protocol: 5,000 training images are held out (fixed split seed); the dense
   baseline (``lenet-mnist`` preset, 15 epochs) and every pruned model train on the other
   55,000; a fine-tuning schedule (``CANDIDATES``) is chosen on the held-out images (seed 0),
   then run for seeds 0-4 and judged on the 10k test split. LeNet-300-100 has no dropout
   layer, so Han et al.'s dropout adjustment does not apply.

   *Dense teacher* (the seed's own dense model; the entry's main record, commands in it).
   Validation, dense 1.22%: AGP 1.66%, weight decay off + AGP done at 50% 1.56% (chosen),
   Han-style iterative 1.66%; T=2 1.62%, an ensemble of 3 dense teachers 1.60%. Test, seeds
   0-4: dense 1.32 / 1.27 / 1.31 / 1.37 / 1.32%, pruned +0.12 / +0.11 / +0.06 / +0.17 / +0.12
   points: mean +0.116 (sd 0.04), not met.

   *Wide teacher* (the entry's ``stronger_teacher``): a different, larger model than the one
   pruned, 784-1200-1200-10 (2.40M parameters vs LeNet-300's 267k; :func:`wide_teacher`),
   trained once (seed 0, 425 s) on the 55k only and shared by every seed; the student still
   starts from, and is judged against, its seed's dense LeNet-300; all else as chosen above.
   Fixed before any run: alpha 0.7 (as chosen) and 0.9. Validation (seed 0): teacher 0.92%,
   pruned 1.32% at both alphas (0.7, the first, taken), beating 1.56%, the gate for the test
   split (``--require-val-below 0.0156``). Test, seeds 0-4, same dense models as above:
   pruned 1.18 / 1.10 / 1.27 / 1.26 / 1.28%, -0.14 / -0.17 / -0.04 / -0.11 / -0.04 points vs
   the plain dense baseline, mean -0.100 (sd 0.06): **met**, on the mean and every seed. Most
   of it is the teacher's: the dense LeNet-300 distilled from it (:func:`dense_distilled`)
   gets 1.06 / 0.95 / 0.99 / 1.03 / 1.10% (mean 1.03%); the pruned model trails that by +0.19
   points (mean; +0.12 to +0.28). Teacher's test error, read after the run: 0.82%. 1 thread,
   load 2.3-4.3, 13 minutes (+7 for the teacher), ``--only lenet300 --seeds 0 1 2 3 4
   --candidates 9,10 --require-val-below 0.0156 --store-as stronger_teacher --dense-cache D``.
2. LeNet-5, 50% of conv channels and fc1 neurons physically removed (L1 group importance,
   one-shot + fine-tune). Target: test error within 0.2 points of dense; the real latency
   speedup (batch 64, 2 threads, median of repeats) is reported beside the MAC reduction.

Writes ``benchmarks/results/prune_accuracy.json`` (config, machine, versions, metrics).

Run:  python benchmarks/prune_accuracy.py [--data PATH] [--epochs N] [--finetune-epochs N]
      [--seeds 0 1 2] [--candidates 0,2,5] [--scale F] [--only lenet300|lenet5]
      [--threads N] [--limit N (smoke runs)] [--validation-only] [--dense-cache DIR]
      [--teacher-cache DIR] [--require-val-below F] [--store-as KEY]
With ``--only``, the other model's entry already in the JSON is kept. ``--validation-only``
runs the trials on the held-out images and appends them to the LeNet-300-100 entry's
``validation_only`` list, leaving the recorded test result alone; ``--store-as KEY`` puts
selection and test in the entry's ``KEY`` instead, with ``--require-val-below F`` only if a
candidate's validation error is below ``F`` (else into ``validation_only``). The caches keep
dense models by seed (shared by processes and ensemble teachers) and the wide teacher.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from _common import SPLIT_SEED, VAL_SIZE, machine_info, split_validation
from torch.utils.data import TensorDataset

import torchshrink
from torchshrink.core.databundle import DataBundle
from torchshrink.core.zoo import create_zoo_model
from torchshrink.distill import DistillConfig, Teacher, distill_loss_terms
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
    teacher: str = "dense"  # "dense": the seed's dense LeNet-300; "mlp1200": the wide MLP


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
    # A different, larger teacher (784-1200-1200-10, see mlp_teacher); the student still starts
    # from the dense LeNet-300 of its seed. The alpha 0.9 variant (Hinton's weight, as in
    # distill_mnist.py) was fixed before any run: a teacher better than the dense model may
    # deserve more weight than the dense teacher's 0.7.
    Schedule("agp wd0 end50% mlp1200", weight_decay=0.0, agp_end=0.5, teacher="mlp1200"),
    Schedule(
        "agp wd0 end50% mlp1200 a0.9", weight_decay=0.0, agp_end=0.5, teacher="mlp1200", alpha=0.9
    ),
]
DEFAULT_CANDIDATES = "0,2,5"  # what the recorded run compared (CPU time on a shared machine)


DENSE_CACHE: Path | None = None  # --dense-cache: reuse dense models across processes
TEACHER_CACHE = Path("/tmp/prune_acc_teachers")  # --teacher-cache: the wide MLP teachers
TEACHER_SEED = 0  # one wide teacher for every seed: a fixed model, like a pretrained one


def wide_teacher(data: DataBundle, threads: int) -> Teacher:
    """The wide teacher, 784-1200-1200-10, with its logits over ``data.train`` precomputed.

    ``benchmarks/distill_mnist.py``'s ``light_dropout_0.1_0.2`` recipe: dropout 0.1 / 0.2,
    2-pixel jitter, max-norm 3, 20 epochs of Nesterov SGD from 0.05 (1-epoch warm-up, cosine),
    no weight decay, gradient clip 5; trained on ``data.train`` only (the 55k part of the
    split, never the held-out or test images) and cached in ``TEACHER_CACHE``. Fine-tuning
    batches are clean training images, so the logits table serves every one of them.
    """
    from distill_mnist import get_teacher  # someone else's file: only its recipe is reused

    cfg = TrainConfig.preset(
        "scratch", epochs=20, lr=0.05, weight_decay=0.0, grad_clip=5.0, augment="shift2",
        label_smoothing=0.0, show_progress=False, num_threads=threads,
        eval_every=20,  # data.test is the held-out split here: evaluated, never trained on
    )  # fmt: skip
    key = f"split{SPLIT_SEED}_train{len(data.train)}"  # type: ignore[arg-type]
    model, _ = get_teacher(
        TEACHER_SEED, data, cfg, TEACHER_CACHE, max_norm=3.0, limit=key, dropout=(0.1, 0.2)
    )
    t = Teacher(model.eval(), cache=True)
    t.precompute(data.train)
    return t


def _quiet(threads: int) -> dict[str, Any]:
    """Training settings shared by every run here: no progress bar, no test evaluation."""
    return {"show_progress": False, "num_threads": threads, "eval_every": 100}


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
    cfg = TrainConfig.preset("lenet-mnist", epochs=epochs, seed=seed, **_quiet(threads))
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
    teacher: Teacher | None = None,
) -> tuple[torch.nn.Module, Any]:
    """A pruned copy of ``dense`` (8% of its weights) fine-tuned on ``data.train`` by ``s``.

    The teacher: ``teacher`` if given (the wide MLP), else ``dense`` averaged with ``others``.
    """
    model = copy.deepcopy(dense)
    if teacher is None:
        teacher = Teacher([copy.deepcopy(m).eval() for m in (dense, *others)])
    epochs = max(s.steps, round(s.epochs * scale))
    per_round = max(1, epochs // s.steps)
    ft = TrainConfig.preset(
        "finetune", epochs=per_round, lr=s.lr, weight_decay=s.weight_decay,
        label_smoothing=s.label_smoothing, seed=seed, **_quiet(threads),
        ce_weight=1.0 - s.alpha,  # the loop's cross-entropy; the soft targets get alpha
    )  # fmt: skip
    extra: dict[str, Any] = {}
    if s.schedule == "agp":
        total = len(data.loader("train", batch_size=ft.batch_size)) * per_round
        extra["agp_end_step"] = max(1, int(s.agp_end * total))
    cfg = PruneConfig(ratio=0.92, layer_ratios=ratios, schedule=s.schedule, steps=s.steps,
                      finetune=ft, seed=seed, **extra)  # fmt: skip
    kd = DistillConfig(alpha=s.alpha, temperature=s.temperature)
    terms = distill_loss_terms(model, teacher, kd) if s.alpha > 0 else []
    r = prune(model, cfg, example_inputs=data.example_inputs(1), data=data, loss_terms=terms)
    return model, r


def dense_distilled(
    data: DataBundle, s: Schedule, teacher: Teacher, epochs: int, threads: int, seed: int
) -> torch.nn.Module:
    """Reference: :func:`dense_lenet300`'s run (same preset, epochs, seed, initial weights)
    with ``s``'s distillation from ``teacher`` added: how much of a gain is the teacher's."""
    torch.manual_seed(seed)
    model = create_zoo_model("lenet300")
    cfg = TrainConfig.preset(
        "lenet-mnist", epochs=epochs, seed=seed, ce_weight=1.0 - s.alpha, **_quiet(threads)
    )
    kd = DistillConfig(alpha=s.alpha, temperature=s.temperature)
    train(model, data, cfg, loss_terms=distill_loss_terms(model, teacher, kd))
    return model


def _density(model: torch.nn.Module) -> dict[str, float]:
    return {n: float((p != 0).float().mean()) for n, p in model.named_parameters() if p.dim() > 1}


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
    require_val_below: float | None = None,
) -> dict[str, Any]:
    """Pick a schedule on the 5k validation split (seed 0), then test it over ``seeds``.

    With ``validation_only`` the test split is not looked at: only the trials are returned;
    the same happens (with ``"test_run": False``) when ``require_val_below`` is given and no
    candidate's validation error is below it. A wide-MLP teacher's schedule also records, per
    seed, the dense model distilled from the same teacher (:func:`dense_distilled`).
    """
    select, final = split_validation(data)
    t0 = time.perf_counter()
    dense0 = dense_lenet300(select, epochs, threads, seeds[0])
    dense_val = _error(dense0, select)
    print(f"  dense seed {seeds[0]}: val {100 * dense_val:.2f}%", flush=True)
    trials, pruned = [], []
    wide: Teacher | None = None  # one wide teacher, trained on the 55k, for every seed
    if any(s.teacher == "mlp1200" for s in candidates):
        t = time.perf_counter()
        wide = wide_teacher(select, threads)
        info = {"teacher_val_error": _error(wide.members[0], select)}
        print(f"  wide teacher: val {100 * info['teacher_val_error']:.2f}%", flush=True)
        info["teacher_seconds_incl_cache_load"] = time.perf_counter() - t

    def run(dense: torch.nn.Module, d: DataBundle, s: Schedule, seed: int) -> Any:
        others = _others(s, select, epochs, threads, seed)
        teacher = wide if s.teacher == "mlp1200" else None
        kw = {"ratios": ratios, "scale": scale, "others": others, "teacher": teacher}
        return prune_lenet300(dense, d, s, threads, seed=seed, **kw)

    for s in candidates:
        t = time.perf_counter()
        model, r = run(dense0, select, s, seeds[0])
        err = _error(model, select)
        pruned.append((model, r))
        ft_epochs = r.config.finetune.epochs * s.steps  # type: ignore[union-attr]
        trials.append({**asdict(s), "val_error": err, "val_delta_points": 100 * (err - dense_val),
                       "weights_kept": _kept(model), "finetune_epochs": ft_epochs,
                       "seconds": time.perf_counter() - t})  # fmt: skip
        print(f"  {s.name}: val {100 * err:.2f}% (dense {100 * dense_val:.2f}%)", flush=True)
    if wide is not None:  # every fine-tuning batch should come from the logits table
        info |= {"table_hits": wide.cache_hits, "table_misses": wide.cache_misses}
    best = min(range(len(candidates)), key=lambda i: (trials[i]["val_error"], i))
    beats = require_val_below is None or trials[best]["val_error"] < require_val_below - 1e-9
    if validation_only or not beats:
        out = {"dense_val_error": dense_val, "trials": trials, "seconds": time.perf_counter() - t0}
        out |= {"wide_teacher": info} if wide is not None else {}
        if require_val_below is not None:
            out |= {"require_val_below": require_val_below, "test_run": False}
        return out
    chosen = candidates[best]
    runs = []
    for seed in seeds:  # the test split is looked at only here, after the choice
        if seed == seeds[0]:  # the same training run as its trial (same data, seed, dense)
            dense, (model, r) = dense0, pruned[best]
        else:
            dense = dense_lenet300(select, epochs, threads, seed)
            model, r = run(dense, final, chosen, seed)
        d_err, p_err = _error(dense, final), _error(model, final)
        ref: dict[str, Any] = {}
        if wide is not None and chosen.teacher == "mlp1200":
            dd = dense_distilled(select, chosen, wide, epochs, threads, seed)
            dd_err = _error(dd, final)
            ref = {"distilled_dense_test_error": dd_err,
                   "distilled_dense_val_error": _error(dd, select),
                   "delta_vs_distilled_dense_points": 100 * (p_err - dd_err)}  # fmt: skip
            print(f"  seed {seed}: distilled dense {100 * dd_err:.2f}%", flush=True)
        runs.append({"seed": seed, "dense_test_error": d_err, "pruned_test_error": p_err,
                     "delta_points": 100 * (p_err - d_err), **ref,
                     "dense_val_error": _error(dense, select), "weights_kept": _kept(model),
                     "params_kept": 1 - r.sparsity,
                     "per_layer_density": _density(model)})  # fmt: skip
        print(f"  seed {seed}: dense {100 * d_err:.2f}% pruned {100 * p_err:.2f}%", flush=True)
    mean, kept = statistics.fmean, max(r["weights_kept"] for r in runs)
    delta = mean(r["delta_points"] for r in runs)
    extra: dict[str, Any] = {}
    if runs and "distilled_dense_test_error" in runs[0]:
        vs_dd = [r["delta_vs_distilled_dense_points"] for r in runs]
        dd_mean = mean(r["distilled_dense_test_error"] for r in runs)
        extra = {"wide_teacher": info, "distilled_dense_test_error_mean": dd_mean,
                 "delta_vs_distilled_dense_points_per_seed": vs_dd,
                 "delta_vs_distilled_dense_points_mean": mean(vs_dd)}  # fmt: skip
    extra["seeds_within_target"] = sum(r["delta_points"] <= 0.1 + 1e-9 for r in runs)
    if len(runs) > 1:
        extra["delta_points_stdev"] = statistics.stdev(r["delta_points"] for r in runs)
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
        "delta_points_mean": delta, "delta_points_per_seed": [r["delta_points"] for r in runs],
        "target_delta_points": 0.1, "met_mean": delta <= 0.1 + 1e-9 and kept <= 0.08,
        "met_every_seed": all(r["delta_points"] <= 0.1 + 1e-9 for r in runs) and kept <= 0.08,
        "weights_kept": kept, "ratios": ratios,
        "dropout": "not applicable: LeNet-300-100 has no dropout layer",
        **extra, "seconds": time.perf_counter() - t0,
    }  # fmt: skip


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
    global DENSE_CACHE, TEACHER_CACHE
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
    ap.add_argument("--teacher-cache", default=str(TEACHER_CACHE), help="wide MLP teachers")
    ap.add_argument("--require-val-below", type=float, default=None, help="else no test run")
    ap.add_argument(
        "--store-as", default=None, help="lenet300 only, kept beside the recorded entry"
    )
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    out = Path(args.out)
    ratios = RATIOS
    if args.lenet300_ratios:
        ratios = {k: float(v) for k, v in (kv.split("=") for kv in args.lenet300_ratios.split(","))}
    candidates = [CANDIDATES[int(i)] for i in args.candidates.split(",")]
    torch.set_num_threads(args.threads)
    DENSE_CACHE = Path(args.dense_cache) if args.dense_cache else None
    TEACHER_CACHE = Path(args.teacher_cache)
    data = torchshrink.load_data(f"npz:{args.data}")
    if args.limit:
        lim = args.limit
        cut = [TensorDataset(*(t[:lim] for t in ds.tensors)) for ds in (data.train, data.test)]
        data = replace(data, train=cut[0], test=cut[1])
    # Keep the other model's entry when only one is run.
    record: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    record |= {"name": "prune_accuracy", "machine": machine_info(), "threads": args.threads,
               "versions": {"torch": torch.__version__, "torchshrink": torchshrink.__version__},
               "dense_epochs": args.epochs}  # fmt: skip
    l300_run = functools.partial(
        lenet300, data, args.epochs, args.threads, ratios=ratios, candidates=candidates
    )
    if args.validation_only or args.store_as:  # beside the recorded entry, which stays
        seeds = args.seeds[:1] if args.validation_only else args.seeds
        entry = l300_run(
            seeds=seeds,
            scale=args.scale,
            validation_only=args.validation_only,
            require_val_below=args.require_val_below,
        )
        entry |= {"command": " ".join(sys.argv[1:]), "loadavg_end": list(os.getloadavg())}
        l300 = record.setdefault("lenet300_unstructured_8pct", {})
        if args.validation_only or entry.get("test_run") is False:  # test split unseen
            l300.setdefault("validation_only", []).append(entry)
        else:
            l300[args.store_as] = entry
        print(json.dumps(entry, indent=1, default=str), flush=True)
        args.only = "none"
    if args.only in (None, "lenet300"):
        for old in ("lenet300_finetune_epochs", "notes"):  # earlier attempts stay
            record.pop(old, None)
        entry = l300_run(seeds=args.seeds, scale=args.scale)
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
