"""Hinton et al. (2015) distillation on MNIST: 1200-1200 teacher -> 800-800 student, + ensemble.

Teacher: 784-1200-1200-10 MLP, dropout (``--input-dropout`` / ``--hidden-dropout``, Hinton's
0.2 / 0.5 by default), inputs jittered by up to 2 pixels, max-norm on every unit's incoming
weights (``--max-norm``) instead of weight decay, Nesterov SGD, 1-epoch warm-up, cosine decay
from ``--teacher-lr`` 0.05 (chosen on the first epochs' training loss: 0.2 collapsed, 0.1 rose
after warm-up), gradient clipping at 5; cached in ``--cache-dir`` (keyed by seed and a hash of
its settings). Student: 784-800-800-10 MLP, no regularisation. Runs (test errors of 10,000):
the teacher; **headline (Hinton's setting)**: the student alone and the student distilled
(first of ``--temperatures``, ``--alpha``) on the *same clean* batches, epochs, optimizer,
schedule and batch order: only the loss differs; gap closed = ``(alone - distilled) / (alone -
teacher)``, target >= 0.8; secondary: the student alone on jittered batches (control) vs
distilled on them, and an ensemble of ``--ensemble-seeds`` teachers distilled into one student.

Measured (``benchmarks/results/distill_mnist.json``, rewritten after every run; commands,
settings, seconds in each record), 2026-11-25, 1 thread, shared 2-core machine:

* top level, dropout 0.2 / 0.5, 20 teacher and 12 student epochs (load 5-10): teacher 136,
  alone 154, distilled T=20 152 (gap closed 0.11), T=8 159; jitter control 89, distilled on
  jitter 138; ensemble (136 / 130 / 119, averaged 119) -> 138 (0.46). Dropout 0.5 leaves the
  teacher at 96.6% training accuracy after 20 epochs.
* ``variants["light_dropout_0.1_0.2"]``: dropout 0.1 / 0.2, T=20, alpha 0.9, 12 student epochs
  fixed in advance, students on all 60k; ``--seed N``: teacher of seed N, student init seed
  1 + N, batch order N. Teachers 84 / 89 / 81, alone 154 / 141 / 135, distilled 96 / 100 / 97,
  gap closed 0.83 / 0.79 / 0.70, of the 3-seed means 0.78: **not met**. Ensemble -> 96 (0.79).
* ``variants["holdout_val_selected"]``: settings chosen on held-out data (as in
  ``prune_accuracy.py``). ``--holdout``: a fixed 5,000 of the 60k training images (split seed
  1234) are held out, every student (alone and distilled) trains on the other 55k; the
  teachers are the cached light-dropout ones, trained on all 60k training images (the 5k
  included: their validation error, 26 for seed 0, is optimistic; no teacher saw a test
  image). ``--select`` (seed 0, test split never evaluated) runs ``GRID``, fixed before it
  ran: T in {4, 8, 20} x alpha in {0.5, 0.9} at 12 epochs, then the best of these at 20
  epochs with the student alone also at 20; lowest distilled validation error wins, ties to
  the earlier. Validation errors of 5,000: alone 86 (12 epochs) / 83 (20); distilled T=4:
  50 / 50 (alpha 0.5 / 0.9), T=8: **45** / 52, T=20: 48 / 49, T=8 alpha 0.5 at 20 epochs 45
  (a tie: 12 epochs kept). Differences of a few errors are within noise (sd ~7 at 45 of
  5,000). Chosen: T=8, alpha 0.5, 12 epochs (13 minutes, load 0.4-2.7). Test, seeds 0 / 1 /
  2 (9 minutes, load 1.3-2.8): teacher 84 / 89 / 81, alone 146 / 155 / 156, distilled 104 /
  101 / 110 (agreement with the teacher 99.5%), gap closed 0.68 / 0.82 / 0.61; of the 3-seed
  means (152.3 - 105.0) / (152.3 - 84.7) = **0.70: the 0.8 target is not met**. Distilled
  students are worse than the light-dropout ones above (105.0 vs 97.7 mean, 55k vs 60k images,
  T=8 / 0.5 vs T=20 / 0.9), a gap validation could not see (45 vs 49 errors there).

* ``variants["long_training"]``: training length chosen on held-out data, each student for
  itself. ``--select-epochs alone|distill`` (``--holdout``, seed 0, the test split never
  evaluated; the distilled student's teacher trained on the 55k part only, 46 validation
  errors) runs ``EPOCH_GRID`` = 12 / 30 / 80 epochs, fixed before it ran: validation errors of
  5,000, alone 86 / **75** / 80, distilled (T=20, alpha 0.9) 62 / **60** / 64; both choose 30.
  Test (``--runs alone distill --student-epochs 30 --alone-epochs 30 --seed N``, students on
  all 60k, the light-dropout teachers of the headline): teacher 84 / 89 / 81, alone 144 / 141 /
  137, distilled 97 / 101 / 99, gap closed 0.78 / 0.77 / 0.68; of the 3-seed means (140.7 -
  99.0) / (140.7 - 84.7) = **0.74: not met**. Longer training helps the student alone (seed 0:
  154 -> 144) more than the distilled one (96 -> 97), so the 12-epoch headline's 0.78 is, if
  anything, flattered by an under-trained student alone. 2026-12-05, 1 thread, load about 2;
  validation 80-epoch trials 7-8 minutes each, each test seed about 10 minutes.

* ``variants["selected_lr_hints"]``: learning rates and FitNets hints chosen on held-out data.
  ``--validate alone|distill`` (``--holdout``, seed 0, the 55k-part teacher for the distilled
  student, the test split never evaluated) runs one student and appends it to the variant's
  ``validation_trials``; two grids, fixed before they ran, each student taking its lowest
  validation error (ties: the earlier): ``variants["hints"]`` (T=20, alpha 0.9, 12 epochs, lr
  0.05): no hints 62, ``--hints 4:6`` (second hidden ReLUs, weight 1) 62, the same at weight
  0.1 63, ``--hints 2:3,4:6`` (both hidden layers, weight 1) **59** (within noise, sd ~7);
  ``variants["student_lr"]`` (12 epochs): alone lr 0.05 / 0.1 / 0.2: 86 / 78 / **77**,
  distilled (no hints) **62** / 66 / 159. Test (``--runs alone distill --alone-lr 0.2
  --student-lr 0.05 --hints 2:3,4:6 --hint-weight 1 --seed N``, students on all 60k, the
  light-dropout teachers): teacher 84 / 89 / 81, alone 144 / 144 / 142, distilled 102 / 92 /
  98, gap closed 0.70 / 0.95 / 0.72; of the 3-seed means (143.3 - 97.3) / (143.3 - 84.7) =
  **0.78: not met**. The hints cost 2-3x the time (the teacher runs live) and change the
  distilled mean by half an error (97.7 -> 97.3); the student alone at its own best learning
  rate gains 0.0 on the mean (143.3 either way) but its seeds move by up to 10 errors. Over
  every protocol tried, the distilled student sits at 96-105 errors whatever the teacher (81 to
  89 errors, or their 81-error ensemble), 11-18 behind it; Hinton et al.'s was 7 behind a
  67-error teacher. 2026-12-05, 1 thread, load about 2; hint students about 4 minutes each.
* ``variants["heavy_teacher"]``: Hinton's teacher regularisation (dropout 0.2 / 0.5, the default)
  trained 3x longer (``--teacher-epochs 60``; at 20 epochs it underfits, above), against the
  light-dropout teacher, chosen by the distilled student's validation error (fixed before it
  ran; ties to the light one). ``--holdout --validate`` (55k-part teacher, T=20, alpha 0.9, 12
  epochs): teacher 50 validation errors (light: 46), distilled student **67** (light: 62), so
  the light teacher stays; the test split was not evaluated. 60 epochs took 15-16 minutes.
* ``variants["long_teacher"]``: the light-dropout teacher (0.1 / 0.2) trained 3x longer
  (``--teacher-epochs 60``), chosen the same way (rule fixed before it ran: the 60-epoch
  teacher if its distilled student's validation error is below the 20-epoch teacher's 62,
  ties to the 20-epoch one). ``--holdout --validate`` (55k-part teacher, T=20, alpha 0.9, 12
  epochs, lr 0.05): teacher 48 validation errors (20 epochs: 46), distilled student **57**
  (62): the 60-epoch teacher is chosen (a difference within noise, sd ~7). Test, the
  headline protocol unchanged otherwise (``--runs alone distill --seed N``, students on all
  60k, 12 epochs, the same student settings as ``light_dropout_0.1_0.2``): teachers 77 / 72 /
  72 (20 epochs: 84 / 89 / 81), alone 154 / 141 / 135 (the same runs as before, bit for bit),
  distilled 85 / 85 / 86 (agreement with the teacher 99.6%), gap closed 0.90 / 0.81 / 0.78;
  of the 3-seed means (143.3 - 85.3) / (143.3 - 73.7) = **0.83: the 0.8 target is met** (on
  2 of the 3 seeds alone). Ensemble of the three 60-epoch teachers (``--runs ... ensemble``,
  seed 0): 65 errors, its student 80, (154 - 80) / (154 - 65) = 0.83. This is the fifth
  protocol evaluated on the test split (after ``light_dropout_0.1_0.2``,
  ``holdout_val_selected``, ``long_training`` and ``selected_lr_hints``); each was chosen on
  held-out data or fixed in advance, never on test errors. Each 60-epoch teacher took 14-20
  minutes beside two other jobs; each test seed about 5 minutes. 2026-12-05, 1 thread.
* ``variants["long_teacher_30ep"]``: the same 60-epoch teachers with both students trained
  for the 30 epochs that ``long_training``'s held-out selection chose for each (``--runs
  alone distill --student-epochs 30 --alone-epochs 30 --seed N``): alone 144 / 141 / 137,
  distilled 83 / 84 / 84, gap closed 0.91 / 0.83 / 0.82, of the 3-seed means (140.7 - 83.7)
  / (140.7 - 73.7) = **0.85**: met on every seed under this protocol too (each seed about 8
  minutes).

Commands: ``python benchmarks/distill_mnist.py --teacher-epochs 20 --input-dropout 0.1
--hidden-dropout 0.2 --holdout --variant holdout_val_selected --cache-dir
/tmp/distill_teachers_s10`` + ``--select`` (validation), or + ``--runs alone distill
--temperatures 8 --alpha 0.5 --student-epochs 12 --seed N`` (test, N = 0, 1, 2 in order).

Usage:
    python benchmarks/distill_mnist.py [--teacher-epochs 20] [--student-epochs 12]
        [--temperatures 20 8] [--alpha 0.9] [--ensemble-seeds 0 1 2] [--seed 0]
        [--only-teachers] [--limit N] [--input-dropout 0.2] [--hidden-dropout 0.5]
        [--variant NAME] [--holdout [--select | --select-epochs alone|distill |
        --validate [alone|distill]]] [--student-lr LR] [--alone-lr LR] [--alone-epochs N]
        [--hints S:T,... [--hint-weight W]]
        [--runs alone distill control jitter_distill temperatures ensemble]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import SPLIT_SEED, MeanLogits, machine_info, split_validation
from torch import nn

import torchshrink
from torchshrink.core.databundle import DataBundle
from torchshrink.distill import DistillConfig, Teacher, agreement, distill
from torchshrink.train import TrainConfig, train
from torchshrink.train.hooks import TrainHook, TrainState

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
OUT = Path(__file__).resolve().parent / "results" / "distill_mnist.json"
RUNS = ("alone", "distill", "control", "jitter_distill", "temperatures", "ensemble")
DEFAULT_DROPOUT = (0.2, 0.5)  # Hinton's teacher: input 0.2, hidden 0.5
PUBLISHED = {"student_alone": 146, "student_distilled_T20": 74, "teacher": 67}
ALONE_CLEAN = "student alone (clean)"
CONTROL = "student alone (jitter, control)"
# --select's grid, fixed before it was run: (T, alpha) at --student-epochs, then the best of
# these again at LONG_EPOCHS (alone and distilled both); ties go to the earlier trial.
GRID = ((4.0, 0.5), (4.0, 0.9), (8.0, 0.5), (8.0, 0.9), (20.0, 0.5), (20.0, 0.9))
LONG_EPOCHS = 20
# --select-epochs' grid, fixed before it was run: training length for the student alone and for
# the student distilled at Hinton's setting (first of --temperatures, --alpha), each chosen on
# its own validation error; ties go to the fewer epochs.
EPOCH_GRID = (12, 30, 80)
# FitNets hint pair: the student's second hidden ReLU -> the teacher's (Sequential indices; the
# teacher's are shifted by its dropout layers).
HINTS = "4:6"


def mlp(hidden: int, *, dropout: tuple[float, float] | None, seed: int) -> nn.Module:
    """784-h-h-10 ReLU MLP; ``dropout`` = (input rate, rate after each hidden layer)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout[0]))
    width = 784
    for _ in range(2):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout[1]))
        width = hidden
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


class MaxNorm(TrainHook):
    """After every step, rescale each unit's incoming weight vector to L2 norm <= ``c``.

    Srivastava et al. (2014) pair dropout with this constraint: it bounds the weights without
    shrinking them the way weight decay does, so a high learning rate cannot blow them up.
    """

    def __init__(self, c: float) -> None:
        self.c = c

    @torch.no_grad()
    def after_step(self, state: TrainState) -> None:
        for m in state.model.modules():
            if isinstance(m, nn.Linear):
                m.weight.renorm_(2, 0, self.c)  # rows = units: (out, in)


class EpochLog(TrainHook):
    """Print each epoch's training loss (no test evaluation), to watch a long teacher run."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def on_epoch_end(self, state: TrainState) -> None:
        r = state.history[-1]
        print(f"{self.tag} epoch {r.epoch + 1}: loss {r.train_loss:.4f} "
              f"train acc {r.train_accuracy:.4f} {r.seconds:.0f} s", flush=True)  # fmt: skip


def errors(model: nn.Module, data: torchshrink.DataBundle) -> int:
    r = torchshrink.evaluate(model, data.test)
    return round(r.error * r.n)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def get_teacher(seed: int, data: Any, cfg: TrainConfig, cache: Path, *, max_norm: float | None,
                limit: Any, dropout: tuple[float, float] = DEFAULT_DROPOUT,
                train_part: str | None = None) -> tuple[nn.Module, float | None]:  # fmt: skip
    """A trained teacher: from ``cache`` when this seed / config / limit was trained before.

    ``train_part`` names a part of the training set ``data.train`` is (e.g. the 55k left by
    ``split_validation``); it goes into the cache key, so such a teacher is never taken for
    one trained on all 60k.
    """
    model = mlp(1200, dropout=dropout, seed=seed)
    parts: list[Any] = [cfg.model_dump(mode="json"), max_norm, limit]
    if dropout != DEFAULT_DROPOUT:  # only then: teachers cached before the flag keep their key
        parts.append(list(dropout))
    if train_part is not None:
        parts.append(train_part)
    key = json.dumps(parts, sort_keys=True)
    tag = hashlib.sha1(key.encode()).hexdigest()[:10]
    path = cache / f"teacher_seed{seed}_{cfg.epochs}e_{tag}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model, None  # trained by an earlier run; its time is in that run's log
    t0 = time.perf_counter()
    hooks: list[TrainHook] = [EpochLog(f"teacher seed {seed}")]
    if max_norm is not None:
        hooks.append(MaxNorm(max_norm))
    train(model, data, cfg.model_copy(update={"seed": seed}), hooks=hooks)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)  # atomic: a parallel reader never sees half a file
    return model, time.perf_counter() - t0


def fit_student(data: DataBundle, cfg: TrainConfig, *, seed: int, teachers: Any,
                temperature: float | None, alpha: float, hints: dict[str, str] | None = None,
                hint_weight: float = 0.0) -> tuple[nn.Module, Any]:  # fmt: skip
    """The 800-800 student (init seed ``1 + seed``), alone or distilled, and its Teacher.

    ``hints`` (student layer -> teacher layer, e.g. ``HINTS``) adds FitNets hint losses of
    weight ``hint_weight`` to the soft targets; the teacher then runs live (features are not
    cached).
    """
    s = mlp(800, dropout=None, seed=1 + seed)  # seed 0 keeps the headline's init seed 1
    if teachers is None:
        train(s, data, cfg)
        return s, None
    # Clean batches repeat every epoch, so the teacher's logits come from a table computed
    # once; jittered batches are new every step, so the teacher runs live.
    cache = cfg.augment is None and not hints
    dc = DistillConfig(temperature=temperature or 1.0, alpha=alpha, cache=cache,
                       features=hints or {}, feature_weight=hint_weight)  # fmt: skip
    t = Teacher(teachers, cache=dc.cache)
    distill(s, t, data, dc, train_config=cfg)
    return s, t


def validate(args: Any, val_data: DataBundle, teacher: nn.Module | None,
             s_cfg: TrainConfig) -> None:  # fmt: skip
    """One student (seed 0) on the 55k part, scored on the 5k held out.

    ``args.validate`` says which: "distill" (``teacher``, first of ``--temperatures``,
    ``--alpha``, ``--hints`` / ``--hint-weight``) or "alone" (``teacher`` is ``None``); both
    take ``--student-epochs`` and ``--student-lr``. The trial is appended to the variant's
    ``["validation_trials"]`` (a rerun of the same settings is skipped). The test split is not
    looked at.
    """
    outer = json.loads(args.out.read_text()) if args.out.exists() else {}
    place = outer.get("variants", {}).get(args.variant, {}) if args.variant else outer
    trials = place.get("validation_trials", [])
    alone = args.validate == "alone"
    teacher_part = "" if alone else ", teacher trained on the 55k part"
    n_val = len(val_data.test)  # type: ignore[arg-type]
    setting = {"student": args.validate, "lr": args.student_lr, "epochs": args.student_epochs,
               "temperature": None if alone else args.temperatures[0],
               "alpha": None if alone else args.alpha, "hints": None if alone else args.hints,
               "hint_weight": args.hint_weight if args.hints and not alone else None}  # fmt: skip
    if any(t["setting"] == setting for t in trials):
        print("already recorded:", setting)
        return
    t0 = time.perf_counter()
    cfg = s_cfg.model_copy(update={"eval_every": args.student_epochs, "seed": 0})
    s, _ = fit_student(val_data, cfg, seed=0, teachers=None if alone else [teacher],
                       temperature=setting["temperature"], alpha=args.alpha,
                       hints=parse_hints(setting["hints"]), hint_weight=args.hint_weight)  # fmt: skip
    trial = {"setting": setting, "val_errors": errors(s, val_data),
             "teacher_val_errors": None if teacher is None else errors(teacher, val_data),
             "protocol": f"seed 0, student on the 55k part{teacher_part}, errors on the "
             f"{n_val} held out (split seed {SPLIT_SEED})",
             "seconds": time.perf_counter() - t0}  # fmt: skip
    print(trial, flush=True)
    trials.append(trial)
    write(args.out, {"validation_trials": trials}, variant=args.variant, merge_only=True)


def parse_hints(spec: str | None) -> dict[str, str] | None:
    """``"4:6,2:3"`` -> ``{"4": "6", "2": "3"}`` (student layer: teacher layer)."""
    if not spec:
        return None
    pairs = [pair.split(":", 1) for pair in spec.split(",")]
    if any(len(p) != 2 or not all(p) for p in pairs):
        raise SystemExit(f"--hints: expected 'student:teacher' layer pairs like '{HINTS}', "
                         f"got {spec!r}")  # fmt: skip
    return dict(pairs)  # type: ignore[arg-type]


def select(args: Any, val_data: DataBundle, teacher: nn.Module, s_cfg: TrainConfig) -> None:
    """Run ``GRID`` on the validation split (seed 0); record each trial in ``["selection"]``.

    The test split is not looked at. A rerun skips the trials already recorded.
    """
    outer = json.loads(args.out.read_text()) if args.out.exists() else {}
    place = outer.get("variants", {}).get(args.variant, {}) if args.variant else outer
    sel = place.get("selection", {"trials": []})
    n_val = len(val_data.test)  # type: ignore[arg-type]
    sel |= {"protocol": f"seed 0, students on the 55k part, errors on the {n_val} "
            f"held out (split seed {SPLIT_SEED}); lowest distilled error wins, ties: the earlier",
            "grid": [list(g) for g in GRID], "long_epochs": LONG_EPOCHS,
            "teacher_val_errors_seen_in_training": errors(teacher, val_data)}  # fmt: skip
    done = {t["name"]: t for t in sel["trials"]}

    def trial(name: str, epochs: int, temp: float | None, alpha: float) -> int:
        if name not in done:
            t0 = time.perf_counter()
            cfg = s_cfg.model_copy(update={"epochs": epochs, "eval_every": epochs, "seed": 0})
            s, _ = fit_student(val_data, cfg, seed=0, teachers=None if temp is None else
                               [teacher], temperature=temp, alpha=alpha)  # fmt: skip
            done[name] = {"name": name, "epochs": epochs, "temperature": temp,
                          "alpha": alpha if temp else None, "val_errors": errors(s, val_data),
                          "seconds": time.perf_counter() - t0}  # fmt: skip
            print(done[name], flush=True)
            sel["trials"] = list(done.values())
            write(args.out, {"selection": sel}, variant=args.variant, merge_only=True)
        return done[name]["val_errors"]

    e = args.student_epochs
    alone = {e: trial(f"alone {e}e", e, None, 0.0)}
    scores = [(trial(f"T={t:g} a={a:g} {e}e", e, t, a), t, a, e) for t, a in GRID]
    _, t_best, a_best, _ = min(scores, key=lambda r: r[0])  # min keeps the first of ties
    alone[LONG_EPOCHS] = trial(f"alone {LONG_EPOCHS}e", LONG_EPOCHS, None, 0.0)
    name = f"T={t_best:g} a={a_best:g} {LONG_EPOCHS}e"
    scores.append((trial(name, LONG_EPOCHS, t_best, a_best), t_best, a_best, LONG_EPOCHS))
    err, t, a, ep = min(scores, key=lambda r: r[0])
    sel["chosen"] = {"temperature": t, "alpha": a, "epochs": ep, "val_errors": err,
                     "alone_val_errors_same_epochs": alone[ep]}  # fmt: skip
    write(args.out, {"selection": sel}, variant=args.variant, merge_only=True)
    print("chosen:", sel["chosen"], flush=True)


def select_epochs(args: Any, val_data: DataBundle, teacher: nn.Module | None,
                  s_cfg: TrainConfig, part: str) -> None:  # fmt: skip
    """``EPOCH_GRID`` on the validation split (seed 0) for one ``part``: "alone" or "distill".

    Each part is recorded under its own key (``epoch_selection_<part>``), so the two parts can
    run in parallel processes; each part's choice is its lowest validation error, ties to the
    fewer epochs. The distilled student uses the first of ``--temperatures`` and ``--alpha``.
    The test split is not looked at; a rerun skips the trials already recorded.
    """
    outer = json.loads(args.out.read_text()) if args.out.exists() else {}
    place = outer.get("variants", {}).get(args.variant, {}) if args.variant else outer
    key = f"epoch_selection_{part}"
    sel = place.get(key, {"trials": []})
    temp = args.temperatures[0] if part == "distill" else None
    n_val = len(val_data.test)  # type: ignore[arg-type]
    sel |= {"protocol": f"seed 0, students on the 55k part, errors on the {n_val} held out "
            f"(split seed {SPLIT_SEED}); teacher trained on the 55k part only; lowest error "
            "wins, ties: fewer epochs", "grid": list(EPOCH_GRID), "temperature": temp,
            "alpha": args.alpha if temp else None}  # fmt: skip
    if teacher is not None:
        sel["teacher_val_errors"] = errors(teacher, val_data)
    done = {t["epochs"]: t for t in sel["trials"]}
    for epochs in EPOCH_GRID:
        if epochs in done:
            continue
        t0 = time.perf_counter()
        cfg = s_cfg.model_copy(update={"epochs": epochs, "eval_every": epochs, "seed": 0})
        s, _ = fit_student(val_data, cfg, seed=0, teachers=None if temp is None else [teacher],
                           temperature=temp, alpha=args.alpha)  # fmt: skip
        done[epochs] = {"epochs": epochs, "val_errors": errors(s, val_data),
                        "seconds": time.perf_counter() - t0}  # fmt: skip
        print(part, done[epochs], flush=True)
        sel["trials"] = [done[e] for e in sorted(done)]
        write(args.out, {key: sel}, variant=args.variant, merge_only=True)
    best = min(sel["trials"], key=lambda t: (t["val_errors"], t["epochs"]))
    sel["chosen"] = {"epochs": best["epochs"], "val_errors": best["val_errors"]}
    write(args.out, {key: sel}, variant=args.variant, merge_only=True)
    print(f"{part} chosen:", sel["chosen"], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--teacher-epochs", type=int, default=20)
    ap.add_argument("--student-epochs", type=int, default=12)
    ap.add_argument(
        "--alone-epochs",
        type=int,
        default=None,
        help="epochs of the students trained alone (default: --student-epochs)",
    )
    ap.add_argument("--temperatures", type=float, nargs="+", default=[20.0, 8.0])
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--teacher-lr", type=float, default=0.05)
    ap.add_argument("--input-dropout", type=float, default=DEFAULT_DROPOUT[0])
    ap.add_argument("--hidden-dropout", type=float, default=DEFAULT_DROPOUT[1])
    ap.add_argument("--max-norm", type=float, default=3.0, help="teacher max-norm; 0 disables")
    ap.add_argument("--student-lr", type=float, default=0.05)
    ap.add_argument(
        "--alone-lr",
        type=float,
        default=None,
        help="learning rate of the students trained alone (default: --student-lr)",
    )
    ap.add_argument("--grad-clip", type=float, default=5.0)
    ap.add_argument("--ensemble-seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument(
        "--seed", type=int, default=0,
        help="teacher seed; students get init seed 1+N and batch-order seed N (0: the headline's); "
        "N != 0 is recorded under the record's 'seeds'[N], the seed-0 record left as it is",
    )  # fmt: skip
    ap.add_argument("--only-teachers", action="store_true", help="train / cache teachers, exit")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/torchshrink_distill_teachers"))
    ap.add_argument("--data", default=f"npz:{MNIST}")
    ap.add_argument("--limit", type=int, default=None, help="samples per split (smoke runs)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    ap.add_argument("--variant", help="store the record under this key of --out's 'variants', "
                    "keeping the rest of the file (earlier runs) as it is")  # fmt: skip
    ap.add_argument("--holdout", action="store_true", help="students on 55k, 5k held out "
                    "(the teachers stay the 60k ones)")  # fmt: skip
    ap.add_argument("--select", action="store_true", help="with --holdout: validation grid "
                    "(seed 0, no test split), exit")  # fmt: skip
    ap.add_argument("--hints", help="FitNets hint pairs 'student:teacher,...' of layer names, "
                    f"added to the soft targets (e.g. '{HINTS}': the second hidden ReLUs)")  # fmt: skip
    ap.add_argument("--hint-weight", type=float, default=1.0, help="weight of the hint losses")
    ap.add_argument("--validate", nargs="?", const="distill", choices=("alone", "distill"),
                    help="with --holdout: one student (distilled, the default, or alone) at these "
                    "settings on validation (seed 0, teacher trained on the 55k part, no test "
                    "split), recorded in 'validation_trials', exit")  # fmt: skip
    ap.add_argument("--select-epochs", choices=("alone", "distill"),
                    help="with --holdout: EPOCH_GRID for this student on validation (seed 0, "
                    "teacher trained on the 55k part, no test split), exit")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = torchshrink.load_data(args.data, limit=args.limit)
    common = {"show_progress": False, "num_threads": args.threads, "label_smoothing": 0.0}
    max_norm = args.max_norm or None
    dropout = (args.input_dropout, args.hidden_dropout)
    # Teacher: dropout + jitter + max-norm instead of weight decay (the dropout paper's recipe).
    t_cfg = TrainConfig.preset(
        "scratch", epochs=args.teacher_epochs, lr=args.teacher_lr, weight_decay=0.0,
        grad_clip=args.grad_clip, augment="shift2", eval_every=args.teacher_epochs, **common,
    )  # fmt: skip
    # Students: no regularisation; the same optimizer, schedule, seed and epochs for every one.
    s_cfg = TrainConfig.preset(
        "scratch", epochs=args.student_epochs, lr=args.student_lr, weight_decay=0.0,
        grad_clip=args.grad_clip, eval_every=args.student_epochs, seed=args.seed, **common,
    )  # fmt: skip

    def teacher_for(seed: int) -> tuple[nn.Module, float | None]:
        return get_teacher(seed, data, t_cfg, args.cache_dir, max_norm=max_norm,
                           limit=args.limit, dropout=dropout)  # fmt: skip

    sel_data, s_data = split_validation(data) if args.holdout else (data, data)

    def teacher55k() -> nn.Module:
        return get_teacher(0, s_data, t_cfg, args.cache_dir, max_norm=max_norm, limit=args.limit,
                           dropout=dropout, train_part=f"55k, split seed {SPLIT_SEED}")[0]  # fmt: skip

    if (args.select_epochs or args.validate) and not args.holdout:
        ap.error("--select-epochs and --validate need --holdout")
    if args.validate:
        validate(args, sel_data, teacher55k() if args.validate == "distill" else None, s_cfg)
        return
    if args.select_epochs:
        # the student alone needs no teacher
        teacher = teacher55k() if args.select_epochs == "distill" else None
        select_epochs(args, sel_data, teacher, s_cfg, args.select_epochs)
        return
    if args.select:
        select(args, sel_data, teacher_for(0)[0], s_cfg)
        return
    if args.only_teachers:
        for seed in args.ensemble_seeds:
            print(f"teacher seed {seed}: {teacher_for(seed)[1]} s", flush=True)
        return

    runs: list[dict[str, Any]] = []
    record: dict[str, Any] = {
        "name": "distill_mnist",
        "command": "python " + " ".join(sys.argv),
        "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "teacher_train": t_cfg.model_dump(mode="json"),
                   "teacher_max_norm": max_norm, "teacher_dropout": list(dropout),
                   "student_train": s_cfg.model_dump(mode="json")},
        "machine": machine_info(),
        "reference": "Hinton et al. 2015, MNIST: student 784-800-800-10 146 errors alone, 74 "
        "distilled (T=20) on the un-jittered transfer set; teacher 784-1200-1200-10 with "
        "dropout, jitter, max-norm 67",
        "published": PUBLISHED,
        "runs": runs,
    }  # fmt: skip
    t_start = time.perf_counter()

    def log(run: dict[str, Any]) -> None:
        runs.append(run)
        print(run, flush=True)
        record["wall_seconds"] = time.perf_counter() - t_start
        summarize(record)
        write(args.out, record, variant=args.variant, seed=args.seed)

    teacher, sec = teacher_for(args.seed)
    t_err = errors(teacher, data)
    log({"name": "teacher 1200-1200 dropout+jitter+max-norm", "test_errors": t_err,
         "params": n_params(teacher), "dropout": list(dropout), "epochs": args.teacher_epochs,
         "seed": args.seed, "seconds": sec})  # fmt: skip

    def student_run(name: str, transfer: str, teachers: list[nn.Module] | None,
                    temperature: float | None, teacher_errors: int | None) -> None:  # fmt: skip
        t0 = time.perf_counter()
        augment = "shift2" if transfer == "jitter" else None
        epochs, lr = args.student_epochs, args.student_lr
        if teachers is None and args.alone_epochs is not None:
            epochs = args.alone_epochs
        if teachers is None and args.alone_lr is not None:
            lr = args.alone_lr
        cfg = s_cfg.model_copy(update={"augment": augment, "epochs": epochs, "lr": lr,
                                       "eval_every": epochs})  # fmt: skip
        s, t = fit_student(s_data, cfg, seed=args.seed, teachers=teachers,
                           temperature=temperature, alpha=args.alpha,
                           hints=parse_hints(args.hints), hint_weight=args.hint_weight)  # fmt: skip
        n_train = len(s_data.train)  # type: ignore[arg-type]
        run: dict[str, Any] = {"name": name, "transfer": transfer, "params": n_params(s),
                               "epochs": epochs, "lr": lr, "augment": augment,
                               "temperature": temperature, "train_images": n_train,
                               "alpha": args.alpha if teachers else None,
                               "hints": args.hints if teachers else None,
                               "hint_weight": args.hint_weight if teachers and args.hints
                               else None}  # fmt: skip
        if t is not None:
            run["teacher_errors"] = teacher_errors
            run["teacher_cache_hits"], run["teacher_cache_misses"] = t.cache_hits, t.cache_misses
            run["agreement"] = agreement(s, t, data.test)
        run["test_errors"] = errors(s, data)
        run["seconds"] = time.perf_counter() - t0
        log(run)

    # Priority order (each run is saved as it ends): the headline pair, the jitter comparison,
    # the extra temperatures, then the ensemble (its two extra teachers are the costliest part).
    first, *rest = args.temperatures
    if "alone" in args.runs:
        student_run(ALONE_CLEAN, "clean", None, None, None)
    if "distill" in args.runs:
        student_run(f"student distilled T={first:g} (clean)", "clean", [teacher], first, t_err)
    if "control" in args.runs:
        student_run(CONTROL, "jitter", None, None, None)
    if "jitter_distill" in args.runs:
        student_run(f"student distilled T={first:g} (jitter)", "jitter", [teacher], first,
                    t_err)  # fmt: skip
    if "temperatures" in args.runs:
        for temp in rest:
            student_run(f"student distilled T={temp:g} (clean)", "clean", [teacher], temp, t_err)
    if "ensemble" in args.runs and set(args.ensemble_seeds) - {args.seed}:
        members = [teacher]
        for seed in [s for s in args.ensemble_seeds if s != args.seed]:
            m, sec = teacher_for(seed)
            members.append(m)
            log({"name": f"teacher seed {seed}", "test_errors": errors(m, data),
                 "epochs": args.teacher_epochs, "seconds": sec})  # fmt: skip
        e_err = errors(MeanLogits(members), data)
        log({"name": f"ensemble teacher x{len(members)}", "test_errors": e_err,
             "params": sum(n_params(m) for m in members)})  # fmt: skip
        student_run(f"student distilled from ensemble T={first:g} (clean)", "clean", members,
                    first, e_err)  # fmt: skip
    print(json.dumps(record.get("headline"), indent=2))
    print(f"wrote {args.out}")


KEPT = (
    "variants",
    "seeds",
    "seed_summary",
    "selection",
    "epoch_selection_alone",
    "epoch_selection_distill",
    "validation_trials",
)  # nested records a rewrite must not drop


def write(out: Path, record: dict[str, Any], *, variant: str | None, seed: int = 0,
          merge_only: bool = False) -> None:  # fmt: skip
    """Write ``record`` to ``out``, keeping every other record already in the file.

    With ``variant``, the record goes to ``out["variants"][variant]`` instead of the top level;
    with ``seed`` != 0, to that place's ``["seeds"][str(seed)]``, and the place's
    ``seed_summary`` (see ``seed_summary``) is recomputed. Seed 0 is the place itself.
    ``merge_only`` adds ``record``'s keys to the place, leaving the rest of it as it is.
    """
    outer = json.loads(out.read_text()) if out.exists() else {}
    place = outer if variant is None else outer.setdefault("variants", {}).setdefault(variant, {})
    if merge_only:
        place.update(record)
    elif seed == 0:
        kept = {k: place[k] for k in KEPT if k in place}
        place.clear()
        place.update(record, **kept)
    else:
        place.setdefault("seeds", {})[str(seed)] = record
    if place.get("seeds"):
        place["seed_summary"] = seed_summary(place)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(outer, indent=2) + "\n")
    tmp.rename(out)  # atomic: a crash mid-write never leaves the earlier runs half-written


def seed_summary(place: dict[str, Any]) -> dict[str, Any]:
    """Per-seed headline errors and gap closed, their means, and the gap of the means.

    Seed 0 is ``place``'s own headline, seed N its ``seeds[N]`` headline; seeds whose headline
    is not recorded yet are left out (``seeds`` says which are in).
    """
    heads = {"0": place.get("headline")}
    heads |= {k: r.get("headline") for k, r in sorted(place.get("seeds", {}).items())}
    per = {
        k: {"teacher_errors": h["teacher_errors"], "alone_errors": h["student_alone_clean_errors"],
            "distilled_errors": h["student_distilled_clean_errors"], "gap_closed": h["gap_closed"]}
        for k, h in heads.items() if h is not None
    }  # fmt: skip
    n = len(per)
    if n == 0:  # a seed's first run (student alone) is in, no headline yet
        return {"seeds": [], "per_seed": {}}
    mean = {f: sum(p[f] for p in per.values()) / n for f in
            ("teacher_errors", "alone_errors", "distilled_errors")}  # fmt: skip
    gaps = [p["gap_closed"] for p in per.values() if p["gap_closed"] is not None]
    of_means = _gap(mean["alone_errors"], mean["distilled_errors"], mean["teacher_errors"])
    return {
        "seeds": sorted(per, key=int), "per_seed": per,
        **{f"mean_{f}": v for f, v in mean.items()},
        "gap_closed_of_means": of_means,
        "mean_of_gaps_closed": sum(gaps) / len(gaps) if gaps else None,
        "min_gap_closed": min(gaps) if gaps else None,
        "target": 0.8, "target_met_by_means": of_means is not None and of_means >= 0.8,
    }  # fmt: skip


def _gap(base: float | None, e: float, te: float) -> float | None:
    """Fraction of the ``base`` - teacher gap closed; ``None`` when there is no gap to close."""
    return (base - e) / (base - te) if base is not None and base > te else None


def summarize(record: dict[str, Any]) -> None:
    """Add the gap-closed figures, the headline judgement and the jitter comparison (in place).

    Each distilled run is compared with the student alone trained on the same transfer set
    (clean with clean, jittered with the jittered control). The headline is the first
    temperature of the clean transfer set, Hinton's setting: target met when its gap closed is
    at least 0.8.
    """
    by_name = {r["name"]: r["test_errors"] for r in record["runs"] if "test_errors" in r}
    base = {"clean": by_name.get(ALONE_CLEAN), "jitter": by_name.get(CONTROL)}
    for run in record["runs"]:
        if run.get("teacher_errors") is not None:
            b = base.get(run.get("transfer", "jitter"))
            run["student_alone_errors"] = b
            run["gap_closed"] = _gap(b, run["test_errors"], run["teacher_errors"])
    first = record["config"]["temperatures"][0]
    head = next((r for r in record["runs"]
                 if r["name"] == f"student distilled T={first:g} (clean)"), None)  # fmt: skip
    if head is not None and base["clean"] is not None:
        closed = head["gap_closed"]
        record["headline"] = {
            "setting": "clean transfer set (Hinton): student alone clean vs distilled clean",
            "temperature": first, "teacher_errors": head["teacher_errors"],
            "student_alone_clean_errors": base["clean"],
            "student_distilled_clean_errors": head["test_errors"], "gap_closed": closed,
            "target": 0.8, "target_met": closed is not None and closed >= 0.8,
        }  # fmt: skip
    jit = next((r for r in record["runs"]
                if r["name"] == f"student distilled T={first:g} (jitter)"), None)  # fmt: skip
    if jit is not None and base["jitter"] is not None:
        record["secondary_jitter"] = {
            "setting": "jittered batches for both: jitter-only control vs distilled on jitter",
            "temperature": first, "teacher_errors": jit["teacher_errors"],
            "control_errors": base["jitter"], "distilled_errors": jit["test_errors"],
            "distilled_minus_control": jit["test_errors"] - base["jitter"],
            "gap_closed": jit["gap_closed"],
        }  # fmt: skip


if __name__ == "__main__":
    main()
