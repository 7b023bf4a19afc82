"""Benchmark: ``torchshrink auto`` against the built-in recipes, LeNet-5 on MNIST, 0.5-point budget.

Train a dense LeNet-5 baseline once (or reuse ``--weights``) on the training samples that are
NOT in auto's validation hold-out (:func:`torchshrink.auto.objective.holdout_split`, the same
``val_size`` and seed: a baseline that saw them would inflate every validation score and so
every validation drop), run every built-in recipe on it
(its model and data overridden, its own training dropped), keep those whose test accuracy is
within the budget of the baseline, and take the smallest file among them. Then run ``auto``
(objective ``size``: bytes of the saved, Huffman-coded file) with the same budget from the same
baseline file and record: the chosen model's bytes and test accuracy, the ratio
``best recipe bytes / auto bytes`` (target: at least 2), the Pareto front of the search and
the promoted candidates (their validation drop after the full fine-tune). Trials prune
gradually (AGP) during a ``--trial-epochs`` fine-tune on 5,000 samples; the ``--promote``
smallest Pareto candidates within budget + ``--promote-slack`` get ``--final-epochs``.
With ``--distill`` (default) the pruning fine-tunes of auto (trials, promotion, final) learn the dense
baseline's soft targets (alpha ``--distill-alpha``, T ``--distill-t``).
Running it again with the same ``--out`` resumes the study (``auto.seconds`` then covers
only the resumed part).

Run:  python benchmarks/auto_lenet5.py [--baseline-epochs N] [--weights FILE] [--trials N]
      [--workers K] [--trial-epochs N] [--final-epochs N] [--promote K]
      [--promote-slack F] [--no-distill] [--recipes a,b] [--out DIR]
Writes benchmarks/results/auto_lenet5.json (updated after every step, so a partial run counts).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _common import machine_info
from torch.utils.data import Subset

import torchshrink
from torchshrink.auto import AutoConfig, run_auto
from torchshrink.auto.objective import holdout_split
from torchshrink.distill import DistillConfig
from torchshrink.pipeline.recipe import builtin_recipes, load_recipe
from torchshrink.pipeline.runner import run_recipe
from torchshrink.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = "npz:" + os.environ.get("MNIST_NPZ", str(ROOT.parent / "shared" / "data" / "mnist.npz"))
RESULT = ROOT / "benchmarks" / "results" / "auto_lenet5.json"
BUDGET = 0.005  # half a point of accuracy
VAL_SIZE = 3000  # auto's validation hold-out (of the training split)
SEED = 0  # auto's seed: fixes the hold-out


def _write(record: dict[str, Any]) -> None:
    RESULT.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")


def _baseline(args: argparse.Namespace, work: Path) -> tuple[Path, float, int]:
    path = work / "baseline.safetensors"
    data = torchshrink.load_data(DATA, seed=SEED)
    _, rest = holdout_split(len(data.train), val_size=VAL_SIZE, seed=SEED)
    if args.weights:  # must have been trained without auto's hold-out (see the docstring)
        model = torchshrink.load(Path(args.weights))
    elif path.is_file():
        model = torchshrink.load(path)
    else:
        torch.manual_seed(0)
        model = torchshrink.load_model("zoo:lenet5")
        cfg = TrainConfig.preset(
            "lenet-mnist", epochs=args.baseline_epochs, show_progress=False, eval_every=100
        )
        torchshrink.train(model, replace(data, train=Subset(data.train, rest)), cfg)
    torchshrink.save(model, path)
    acc = torchshrink.evaluate(model, data.test).accuracy
    return path, acc, len(rest)


def _recipe(name: str, baseline: Path, work: Path) -> dict[str, Any]:
    r = load_recipe(name)
    doc = r.model_dump(mode="json", by_alias=True)
    doc.update(model=str(baseline), model_args={}, data=DATA, train=None, profile_repeats=5)
    t0 = time.perf_counter()
    rec = run_recipe(
        load_recipe_from(doc, name), work / f"recipe-{name}", show_progress=False, report=False
    )
    final = rec.stages[-1].metrics
    return {
        "accuracy": final["accuracy"],
        "baseline_accuracy": rec.baseline["accuracy"],
        "drop": rec.baseline["accuracy"] - final["accuracy"],
        "file_bytes": final["file_bytes"],
        "baseline_file_bytes": rec.baseline["file_bytes"],
        "latency_ms_p50": final.get("latency_ms_p50"),
        "seconds": time.perf_counter() - t0,
    }


def load_recipe_from(doc: dict[str, Any], name: str) -> Any:
    from torchshrink.pipeline.recipe import recipe_from_dict

    return recipe_from_dict(doc, source=f"builtin:{name} (adapted)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline-epochs", type=int, default=4)
    p.add_argument("--weights", default=None, help="a trained LeNet-5 model file to start from")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--trial-epochs", type=int, default=2)
    p.add_argument("--trial-lr", type=float, default=0.02)
    p.add_argument("--final-epochs", type=int, default=3)
    p.add_argument("--promote", type=int, default=4, help="candidates given the full fine-tune")
    p.add_argument("--promote-slack", type=float, default=0.05)
    p.add_argument("--distill", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--distill-alpha", type=float, default=0.7)
    p.add_argument("--distill-t", type=float, default=4.0)
    p.add_argument("--sensitivity-slack", type=float, default=10.0)
    p.add_argument("--recipes", default=",".join(builtin_recipes()))
    p.add_argument("--out", default="runs/bench-auto-lenet5")
    args = p.parse_args()
    torch.set_num_threads(1)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "name": "auto_lenet5",
        "data": "npz:mnist.npz",
        "budget_points": 100 * BUDGET,
        "objective": "size (bytes of the saved model file)",
        "machine": machine_info(),
        "args": vars(args),
    }
    baseline, base_acc, n_train = _baseline(args, work)
    record["baseline"] = {
        "test_accuracy": base_acc,
        "file_bytes": baseline.stat().st_size,
        "trained_on": f"{n_train} training samples (auto's {VAL_SIZE}-sample hold-out excluded)",
    }
    _write(record)

    cfg = AutoConfig(
        model=str(baseline),
        data=DATA,
        objective="size",
        max_accuracy_drop=BUDGET,
        trials=args.trials,
        workers=args.workers,
        val_size=VAL_SIZE,
        seed=SEED,
        search_train_size=5000,
        trial_finetune=TrainConfig.preset(
            "finetune", epochs=args.trial_epochs, lr=args.trial_lr, show_progress=False
        ),
        agp=True,
        promote=args.promote,
        promote_slack=args.promote_slack,
        sensitivity_slack=args.sensitivity_slack,
        centroid_finetune=TrainConfig.preset("finetune", epochs=1, lr=1e-3, show_progress=False),
        final_finetune=TrainConfig.preset(
            "finetune", epochs=args.final_epochs, show_progress=False, eval_every=100
        ),
        latency_repeats=5,
        distill=DistillConfig(alpha=args.distill_alpha, temperature=args.distill_t)
        if args.distill
        else None,
    )
    t0 = time.perf_counter()
    res = run_auto(cfg, work / "auto")
    run = json.loads(res.run_json.read_text())
    auto = {
        "seconds": time.perf_counter() - t0,
        "trials": res.trials,
        "chosen": res.chosen,
        "baseline_val_accuracy": res.baseline_val_accuracy,
        "test_accuracy": res.final.get("accuracy") if res.chosen is not None else None,
        "test_drop": (res.baseline["accuracy"] - res.final["accuracy"])
        if res.chosen is not None
        else None,
        "file_bytes": res.final.get("file_bytes") if res.chosen is not None else None,
        "pareto_front": [
            {k: t[k] for k in ("number", "accuracy", "objective_value", "params")}
            for t in run["search"]["trials"]
            if t["pareto"]
        ],
        "promotion": run["search"].get("promotion"),
        "chosen_by": run["search"].get("chosen_by"),
        "trials_record": [
            {k: t[k] for k in ("number", "accuracy", "objective_value", "pareto")}
            for t in run["search"]["trials"]
        ],
    }
    if res.chosen is not None:
        auto["test_within_budget"] = auto["test_drop"] <= BUDGET
    record["auto"] = auto
    _write(record)
    # The auto search first, then the recipes (slowest last): a partial run still compares.
    recipes: dict[str, Any] = {}
    order = ["deep-compression", "int8-ptq", "int4-weight-only", "structured-50"]
    names = [n for n in args.recipes.split(",") if n and n != "demo"]
    for name in sorted(names, key=lambda n: order.index(n) if n in order else len(order)):
        try:
            recipes[name] = _recipe(name, baseline, work)
        except Exception as exc:  # a recipe that does not fit LeNet-5 is recorded, not fatal
            recipes[name] = {"error": f"{type(exc).__name__}: {exc}"}
        recipes[name]["within_budget"] = recipes[name].get("drop", 1.0) <= BUDGET
        record["recipes"] = recipes
        ok = {k: v for k, v in recipes.items() if v.get("within_budget")}
        best = min(ok, key=lambda k: ok[k]["file_bytes"], default=None)
        record["best_recipe"] = best
        if auto.get("file_bytes") and best is not None:
            auto["ratio_vs_best_recipe"] = recipes[best]["file_bytes"] / auto["file_bytes"]
            auto["meets_2x"] = auto["ratio_vs_best_recipe"] >= 2.0
        _write(record)
    record["machine"]["loadavg_end"] = os.getloadavg()
    _write(record)
    summary = {k: v for k, v in auto.items() if k not in ("trials_record", "pareto_front")}
    print(json.dumps({"best_recipe": record.get("best_recipe"), **summary}, indent=2))


if __name__ == "__main__":
    main()
