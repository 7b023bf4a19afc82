"""Benchmark: Deep Compression of LeNet-300-100 and LeNet-5 on MNIST, stage by stage, as a curve.

For each model: train a dense baseline (``TrainConfig.preset("lenet-mnist")``; LeNet-5 with
``shift2`` augmentation) or reuse weights trained that way (``--weights name=FILE``), then run
:func:`torchshrink.pipeline.deep_compression` at several settings from that same dense model and
record per stage the test error, non-zero parameters, file bytes and the compression ratio
(dense fp32 bytes of every floating-point tensor / bytes of the whole Huffman-coded model file,
headers, codebooks, positions and fp32 biases included). The settings form a curve of (ratio,
error) points per model; ``curve`` in the JSON lists them sorted by ratio.

Pruning is AGP (the sparsity rises gradually during one fine-tuning run) with distillation from
the dense model (soft targets, alpha 0.7, T 4) in every fine-tuning, pruning and centroids.

**With a larger teacher** (``--teacher [FILE]``, LeNet-300-100 only): every fine-tuning learns
the soft targets (alpha 0.7, T 4, logits computed once over the clean training set) of a
784-1200-1200-10 MLP, **9x LeNet-300's parameters** (2.40M vs 0.27M; benchmarks/distill_mnist.py's
light-dropout seed-0 teacher, 20 epochs on the 60k training images, 0.84% test error), instead of
the dense model itself. Settings fixed from byte arithmetic before any test error was seen
(``TEACHER_SETTINGS``): ``r60`` (the recorded self-distilled 69x setting, unchanged) and ``t63``
(fc1 5% kept instead of 4.5%, estimated ~63x). Also recorded, ``distilled_dense``: the dense model
fine-tuned with the same teacher and the same 30 epochs, unpruned. Results under
``models["lenet300_teacher"]``; 2026-11-25, 1 thread, load average 1.5-4.4; ``python
benchmarks/deep_compression.py --teacher`` (9 minutes: baseline, reference, seed 0), then
``--seed 1`` and ``--seed 2`` with ``--no-reference --weights
lenet300=/tmp/dc_teacher/lenet300_dense.safetensors`` (4.5 minutes each). Dense baseline 1.26%
(the recorded one, reproduced), distilled dense 1.11%.

==========  =====================  =====================  =====================
setting     seed 0                 seed 1                 seed 2
==========  =====================  =====================  =====================
r60         67.1x  1.22% (-0.04)   68.2x  1.27% (+0.01)   68.0x  1.16% (-0.10)
t63         63.1x  1.24% (-0.02)   64.8x  1.14% (-0.12)   63.9x  1.23% (-0.03)
r60_fold_b5 74.0x  1.23% (-0.03)   74.7x  1.27% (+0.01)   75.1x  1.14% (-0.12)
==========  =====================  =====================  =====================

``r60_fold_b5``: ``r60`` with ``--fold-dead --bias-bits 5`` (2026-12-05; ``--teacher FILE
--no-reference --settings r60 --fold-dead --bias-bits 5 --seed N``, the dense baseline
retrained and reproduced at 1.26%, about 3 minutes a seed): the 1,640 bytes of float32 biases
shared among 32 values per layer.

(points vs the plain dense baseline.) Every run meets issue 5's target (>= 60x within 0.1 points);
vs the (seed-0) distilled dense reference they are 0.03-0.16 points worse. Distilled from
itself, ``r60`` lost 0.41 points (``models["lenet300"]``, seed 0). The teacher is what closes
the gap, and it is a larger model: against a dense LeNet-300 given the same teacher,
compression still costs about 0.1 points.

**LeNet-5 ``s60`` over seeds** (the same dense model, 0.37%; ``--models lenet5 --settings s60
--seed N --weights lenet5=FILE``, seeds 1 and 2 run side by side, 1 thread each, about 40 min,
load about 2): seed 0 69.6x at 0.45% (+0.08), seed 1 68.8x at 0.50% (+0.13), seed 2 68.6x at
0.47% (+0.10). Two of three seeds are within 0.1 points; the mean gap is +0.103 points, so 60x
within 0.1 holds only narrowly and not on average.

**LeNet-5 ``s60`` distilled from an ensemble** (``--ensemble-teacher``: mean logits of the dense
model and two more trained the same way with seeds 1 and 2, 0.42% / 0.37%; the ensemble makes
0.37%, no better than its first member; settings unchanged, fixed before any of these runs;
2026-12-05, 1 thread, two runs side by side, about 13 minutes each, load about 2; members 5.3
minutes each, retrained bit-identically: the seed-0 dense model is again 0.37%): seed 0 69.0x
at 0.50% (+0.13), seed 1 69.0x at 0.46% (+0.09), seed 2 69.1x at 0.50% (+0.13); mean +0.117,
worse than distilling from the model itself (+0.103). Results under
``models["lenet5_ensemble_teacher"]``. Command: ``--ensemble-teacher --member N --tmp DIR``
(N = 0, 1, 2), then ``--ensemble-teacher --settings s60 --seed N --weights
lenet5=DIR/lenet5_dense_seed0.safetensors --tmp DIR``.

**LeNet-5 ``s60`` distilled from a wider LeNet-5** (``--wide-teacher 2``: ``zoo:lenet5`` at
width 2, 1.71M parameters, 4x the student's, trained like the baseline with seed 0 in 13
minutes: 0.36%, barely better than the 0.37% dense model; settings unchanged): seed 0 69.1x at
0.52% (+0.15 points), worse than both the model itself (+0.08) and the ensemble (+0.13) on the
same seed, so seeds 1 and 2 were not run (11 minutes, load about 2). Unlike LeNet-300-100,
whose 1200-1200 teacher is 0.42 points better than it, no larger LeNet-5 trained this way is
much better than the dense LeNet-5, and a teacher no better than the model does not close the
gap. Results under ``models["lenet5_wide_teacher_w2"]``; command: ``--wide-teacher 2 --member
0 --tmp DIR``, then ``--wide-teacher 2 --settings s60 --weights lenet5=FILE --tmp DIR``.

**LeNet-5 ``t62``** (fixed from byte arithmetic and committed before it ran, after ``s60``
missed on average: ``s60`` with fc1 4.7% kept instead of 4%, the ~2,780 weights a 62x file
allows over s60's, all to fc1; distilled from the model itself, as s60; ``--models lenet5
--settings t62 --seed N --weights lenet5=FILE``, 2026-12-05, 1 thread, about 9 minutes each,
seeds 0 and 1 side by side, load about 2): seed 0 62.8x at 0.44% (+0.07), seed 1 62.6x at
0.43% (+0.06), seed 2 62.7x at 0.46% (+0.09); mean +0.073 points, every seed within 0.1:
**issue 5's LeNet-5 target (>= 60x within 0.1 points) met** over three seeds. The seed-0 file
(27,449 bytes) evaluates to 0.44% in a fresh ``torchshrink eval``.

**LeNet-5 further along the curve** (seed 0, the same dense model, distilled from itself;
``--models lenet5 --settings r100`` and ``--settings r160`` side by side, 2026-12-05, 1 thread,
about 9 minutes each, load about 2): ``r100`` (an older setting, first run now) 107.6x at
0.62% (+0.25 points); ``r160`` (fixed from byte arithmetic before it ran, aiming at 160x)
**128.6x** at 0.61% (+0.24): its file is 13,413 bytes, not the ~10,000 estimated, because
relative positions (6,245 bytes, 0.67 B per kept weight) and the fp32 biases and headers
(3,012) do not shrink with the weights; the 3-bit fc1 indices are 3,503. Positions are the
next thing to compress. Codec version 3 (positions counted within live rows and columns only;
``--reprice``, bit-exact, errors unchanged): ``r100`` 109.4x, ``r160`` 13,090 bytes, **131.7x**.
With ``--fold-dead`` (the same training, reproduced bit for bit to the centroids; then 2 conv2
filters and 164 of fc1's 500 neurons, left with no weight, are removed and their constant
outputs folded into the next layer's bias): ``r160_fold`` 12,606 bytes, **136.8x** at 0.61%
(+0.24), ``t62_fold`` 63.5x at 0.44% (+0.07). ``r160`` over seeds (``--fold-dead --seed N``,
seeds 1 and 2 side by side, 10 minutes, load about 2): 136.6x at 0.64% (+0.27), 136.1x at 0.62%
(+0.25); mean +0.253 points at 136.1-136.8x. Module records as a difference from the spec's
build, only changed attributes for a module of the built type (model file version 3;
``--reprice``, bit-exact, errors unchanged; the header of a folded file 1,006 -> 801 bytes):
``r160_fold`` 12,401 bytes, **139.0x**, seeds 1 / 2 138.9x / 138.3x; ``t62_fold`` 64.0x.
With ``--bias-bits 5`` too (each layer's biases shared among 32 values and tuned with the
centroids; 2026-12-05, run beside two other jobs): ``r160_fold_b5`` **152.9x** at 0.61%
(+0.24; the float32 biases were 1,656 bytes), and ``r160_i2`` (fc1 2-bit, fixed from byte
arithmetic before it ran, aiming at 160x) ``r160_i2_fold_b5`` 10,696 bytes, **161.2x** at
0.59% (+0.22); seeds 1 / 2 (``--seed N``, one after the other, about 8 minutes each): 161.8x
at 0.63% (+0.26), 160.8x at 0.68% (+0.31); mean +0.263 points at 160.8-161.8x. ``t62
--fold-dead --bias-bits 5`` (seeds 0-2): 67.5x / 67.2x / 67.4x at +0.07 / +0.06 / +0.09
(the same errors as with exact biases, 62.6-63.0x): 60x within 0.1 points on every seed.

Published (Han et al. 2016): LeNet-300-100 40x at 1.58% error (baseline 1.64%), pruned to 8%
(fc1 8%, fc2 9%, fc3 26% kept); LeNet-5 39x at 0.74% (baseline 0.80%), pruned to 8%
(conv1 66%, conv2 12%, fc1 8%, fc2 19% kept); 5-bit fc and 8-bit conv codebooks.
Target (issue 5): at least 60x with test error within 0.1 points of our dense baseline.

Run:  python benchmarks/deep_compression.py [--models lenet300,lenet5] [--settings a,b]
      [--weights lenet5=FILE] [--threads 1] [--seed N]
      python benchmarks/deep_compression.py --teacher [FILE] [--seed N] [--no-reference]
      python benchmarks/deep_compression.py --reprice   # re-encode recorded runs, see below

``--reprice`` re-encodes the final file of every recorded run whose file still exists with the
current codec (e.g. after a file-format change), checks that the decoded weights are the same
bit for bit and that the test error is unchanged, and records ``ratio`` / ``breakdown`` /
``meets_target`` under ``current_codec`` (the run's own numbers are kept); the curve then uses
the current-codec ratio. No training or tuning happens there.
Each run re-reads the JSON and replaces only its own entries, so runs of different models or
settings can go in parallel processes. Writes benchmarks/results/deep_compression.json.
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
from torchshrink.codec.packed import CODEC_VERSION
from torchshrink.distill import DistillConfig
from torchshrink.pipeline import DeepCompressionConfig, deep_compression
from torchshrink.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DATA = os.environ.get("MNIST_NPZ", str(ROOT.parent / "shared" / "data" / "mnist.npz"))
OUT = ROOT / "benchmarks" / "results" / "deep_compression.json"

PUBLISHED = {
    "lenet300": {"ratio": 40, "error": 0.0158, "baseline_error": 0.0164},
    "lenet5": {"ratio": 39, "error": 0.0074, "baseline_error": 0.0080},
}
BASELINE = {
    "lenet300": {"epochs": 15},
    "lenet5": {"epochs": 15, "augment": "shift2"},
}
KD = DistillConfig(alpha=0.7, temperature=4.0)
# Per setting: fractions removed per layer, index bits, AGP fine-tuning epochs and lr,
# centroid epochs. "paper" keeps Deep Compression's fractions; the others push on.
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "lenet300": {
        "paper": {"layer_ratios": {"fc1": 0.92, "fc2": 0.91, "fc3": 0.74}, "epochs": 30},
        "r60": {
            "layer_ratios": {"fc1": 0.955, "fc2": 0.93, "fc3": 0.75},
            "layer_bits": {"fc1": 4, "fc2": 5, "fc3": 5},
            "epochs": 30,
        },
        "r70": {
            "layer_ratios": {"fc1": 0.965, "fc2": 0.94, "fc3": 0.78},
            "layer_bits": {"fc1": 4, "fc2": 4, "fc3": 5},
            "epochs": 30,
        },
        "r90": {
            "layer_ratios": {"fc1": 0.975, "fc2": 0.95, "fc3": 0.80},
            "layer_bits": {"fc1": 4, "fc2": 4, "fc3": 5},
            "epochs": 30,
        },
    },
    "lenet5": {
        "paper": {
            "layer_ratios": {"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81},
            "epochs": 8,
        },
        "r70": {
            "layer_ratios": {"conv1": 0.4, "conv2": 0.9, "fc1": 0.97, "fc2": 0.8},
            "layer_bits": {"conv.*": 5, "fc1": 4, "fc2": 5},
            "epochs": 8,
        },
        # Chosen before running, from a byte budget: the least pruning (paper ratios, fc1 a
        # little further) whose estimated v2 file still fits 60x with 5-bit conv / 4-bit fc1
        # codebooks, and 12 instead of 8 AGP epochs for the accuracy.
        "s60": {
            "layer_ratios": {"conv1": 0.34, "conv2": 0.88, "fc1": 0.96, "fc2": 0.81},
            "layer_bits": {"conv.*": 5, "fc1": 4, "fc2": 5},
            "epochs": 12,
        },
        # Fixed from byte arithmetic before running (2026-12-05): s60's file is 24,960 B (69x);
        # 62x allows 27,848 B, i.e. ~2,780 more weights at s60's ~1.04 B per stored weight
        # (indices + positions), all given to fc1, the layer pruned furthest below the paper's
        # 8% (4% -> 4.7% kept). Same bits and epochs as s60.
        "t62": {
            "layer_ratios": {"conv1": 0.34, "conv2": 0.88, "fc1": 0.953, "fc2": 0.81},
            "layer_bits": {"conv.*": 5, "fc1": 4, "fc2": 5},
            "epochs": 12,
        },
        "r100": {
            "layer_ratios": {"conv1": 0.5, "conv2": 0.92, "fc1": 0.98, "fc2": 0.85},
            "layer_bits": {"conv.*": 5, "fc1": 4, "fc2": 5},
            "epochs": 8,
        },
        # Fixed from byte arithmetic before running (2026-12-05), aiming at the 160x of later
        # work: 160x allows 10,791 B; at ~1.1 B per stored weight (s60's ~1.23 less fc1's
        # fourth index bit) that is ~9,800 weights. Kept: conv1 300, conv2 1,750, fc1 6,000,
        # fc2 750 (8,800 weights, estimated ~165-180x); s60's 12 epochs.
        "r160": {
            "layer_ratios": {"conv1": 0.4, "conv2": 0.93, "fc1": 0.985, "fc2": 0.85},
            "layer_bits": {"conv.*": 5, "fc1": 3, "fc2": 4},
            "epochs": 12,
        },
        # r160 with fc1 shared among 4 values instead of 8, fixed from byte arithmetic before
        # it ran, for --fold-dead --bias-bits 5 (r160 then: 11,377 bytes, 151.6x, fc1's
        # indices 2,042 bytes at ~2.7 bits each): at ~1.9 bits about 1,430, so ~10,770 bytes,
        # ~160x, the ratio later work reached on LeNet-5.
        "r160_i2": {
            "layer_ratios": {"conv1": 0.4, "conv2": 0.93, "fc1": 0.985, "fc2": 0.85},
            "layer_bits": {"conv.*": 5, "fc1": 2, "fc2": 4},
            "epochs": 12,
        },
    },
}


# With --teacher: LeNet-300-100 distilled from a 784-1200-1200-10 MLP teacher (about 9x the
# student's parameters, trained by benchmarks/distill_mnist.py) instead of from itself. Fixed
# from byte arithmetic before any test error was seen: "r60" is the recorded 69x setting as it
# is; "t63" keeps 5% of fc1 instead of 4.5% (+1176 weights at ~1.15 bytes each, from r60's
# file: ~16.8 kB, ~63x, still above 60x).
TEACHER_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "lenet300": {
        "r60": SETTINGS["lenet300"]["r60"],
        "t63": {
            "layer_ratios": {"fc1": 0.95, "fc2": 0.93, "fc3": 0.75},
            "layer_bits": {"fc1": 4, "fc2": 5, "fc3": 5},
            "epochs": 30,
        },
    },
}
TEACHER_FILE = "/tmp/distill_teachers_s10/teacher_seed0_20e_2f99287f92.pt"
KD_TEACHER = KD.model_copy(update={"cache": True})  # clean batches: teacher logits once
# With --ensemble-teacher: LeNet-5 distilled from the mean logits of three dense LeNet-5s (the
# baseline, seed 0, and two more trained the same way with seeds 1 and 2) instead of from
# itself; the settings are SETTINGS["lenet5"]'s, unchanged (s60 by default).
ENSEMBLE_SEEDS = (0, 1, 2)
ENSEMBLE_SETTINGS = ("s60",)


def _load_teacher(path: str) -> tuple[Any, dict[str, Any]]:
    # distill_mnist's cache holds state dicts of its own mlp(); "light dropout" teachers
    # (input 0.1, hidden 0.2) have the Dropout layers at the same places, inactive in eval.
    from distill_mnist import mlp

    model = mlp(1200, dropout=(0.1, 0.2), seed=0)
    model.load_state_dict(torch.load(path, weights_only=True))
    params = sum(p.numel() for p in model.parameters())
    return model.eval(), {"file": path, "arch": "784-1200-1200-10 MLP", "params": params}


def _with_flags(
    cfg: DeepCompressionConfig, key: str, args: argparse.Namespace
) -> tuple[DeepCompressionConfig, str]:
    """``--fold-dead`` / ``--bias-bits B`` applied to a setting's config, and its record key."""
    if args.fold_dead:
        cfg = cfg.model_copy(update={"fold_dead": True})
        key += "_fold"
    if args.bias_bits is not None:
        cfg = cfg.model_copy(update={"bias_bits": args.bias_bits})
        key += f"_b{args.bias_bits}"
    return cfg, key


def run_teacher(args: argparse.Namespace, data: Any, weights: dict[str, str]) -> None:
    """LeNet-300 settings distilled from the MLP teacher, and the dense model distilled alike."""
    from torchshrink.distill import Teacher, distill

    out, name, tmp = Path(args.out), "lenet300", Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    key = f"{name}_teacher"
    model, base = _baseline(name, data, weights.get(name), args.threads)
    torchshrink.save(model, tmp / f"{name}_dense.safetensors")
    print(f"{name}: baseline error {100 * base['error']:.2f}% ({base['how']})", flush=True)
    teacher, info = _load_teacher(args.teacher)
    info["error"] = 1 - torchshrink.evaluate(teacher, data.test).accuracy  # shown, never tuned on
    t = Teacher(teacher, cache=True)
    t.precompute(data.train, batch_size=512)
    print(f"teacher error {100 * info['error']:.2f}% ({info['params']} params)", flush=True)
    _save(out, key, base, None, None, teacher=info, distill=KD_TEACHER.model_dump(mode="json"))
    ref_error = None
    if args.reference:
        # The dense model fine-tuned exactly like the pruning stage (same epochs, lr, KD), unpruned.
        dense = torchshrink.load(tmp / f"{name}_dense.safetensors")
        cfg = _config(name, "r60", args.threads, 0, table=TEACHER_SETTINGS)
        assert cfg.prune_finetune is not None
        t0 = time.perf_counter()
        distill(dense, t, data, KD_TEACHER, train_config=cfg.prune_finetune)
        ref_error = 1 - torchshrink.evaluate(dense, data.test).accuracy
        ref = {
            "how": f"dense {name} + distill from the teacher, {cfg.prune_finetune.epochs} epochs "
            "(the pruning fine-tune's settings), no pruning",
            "error": ref_error,
            "error_gap_points": 100 * (ref_error - base["error"]),
            "seconds": time.perf_counter() - t0,
            "machine": machine_info(threads=args.threads),
        }
        print(f"distilled dense reference: error {100 * ref_error:.2f}%", flush=True)
        _save(out, key, base, None, None, distilled_dense=ref)
    for setting in args.settings.split(",") if args.settings else TEACHER_SETTINGS[name]:
        dense = torchshrink.load(tmp / f"{name}_dense.safetensors")
        cfg = _config(
            name, setting, args.threads, args.centroid_epochs, table=TEACHER_SETTINGS,
            distill=KD_TEACHER, seed=args.seed,
        )  # fmt: skip
        hits, misses = t.cache_hits, t.cache_misses
        t0 = time.perf_counter()
        run_key = setting if args.seed == 0 else f"{setting}_seed{args.seed}"
        cfg, run_key = _with_flags(cfg, run_key, args)
        path = tmp / f"{key}_{run_key}.ts"
        r = deep_compression(dense, data, config=cfg, path=path, teacher=t)
        run = _run_record(r, base, run_key, threads=args.threads, t0=t0)
        if ref_error is not None:
            run["error_gap_vs_distilled_dense_points"] = 100 * (r.stages[-1].error - ref_error)
        run["teacher_cache_hits"] = t.cache_hits - hits
        run["teacher_cache_misses"] = t.cache_misses - misses
        _save(out, key, base, run_key, run)
    print(f"wrote {out}")


def _member(
    args: argparse.Namespace, data: Any, seed: int, width: float = 1.0
) -> tuple[Any, dict[str, Any]]:
    """Dense LeNet-5 (``width`` x) of ``seed`` for a teacher: from ``--tmp`` or trained, saved."""
    tag = "" if width == 1.0 else f"_w{width:g}"
    path = Path(args.tmp) / f"lenet5{tag}_dense_seed{seed}.safetensors"
    if path.exists():
        model, secs = torchshrink.load(path), None
    else:
        model, b = _baseline("lenet5", data, None, args.threads, seed=seed, width=width)
        path.parent.mkdir(parents=True, exist_ok=True)
        torchshrink.save(model, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)  # a parallel reader never sees half a file
        secs = b["seconds"]
    error = 1 - torchshrink.evaluate(model, data.test).accuracy  # shown, never tuned on
    params = sum(p.numel() for p in model.parameters())
    info = {"seed": seed, "width": width, "params": params, "file": str(path), "error": error,
            "seconds": secs}  # fmt: skip
    return model.eval(), info


def _lenet5_dense(
    args: argparse.Namespace, data: Any, weights: dict[str, str]
) -> tuple[Any, dict[str, Any]]:
    """The dense LeNet-5 (trained, or ``--weights``), saved to ``--tmp``, and its record."""
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    model, base = _baseline("lenet5", data, weights.get("lenet5"), args.threads)
    torchshrink.save(model, tmp / "lenet5_dense.safetensors")
    print(f"lenet5: baseline error {100 * base['error']:.2f}% ({base['how']})", flush=True)
    return model, base


def run_ensemble(args: argparse.Namespace, data: Any, weights: dict[str, str]) -> None:
    """LeNet-5 settings distilled from an ensemble of dense LeNet-5s instead of from itself."""
    from _common import MeanLogits

    name = "lenet5"
    dense, base = _lenet5_dense(args, data, weights)
    members = [dense.eval()]  # each setting compresses its own copy, loaded from --tmp
    info: dict[str, Any] = {"members": [{"seed": 0, "file": base["how"], "error": base["error"]}]}
    for seed in ENSEMBLE_SEEDS[1:]:
        m, mi = _member(args, data, seed)
        members.append(m)
        info["members"].append(mi)
        print(f"member seed {seed}: error {100 * mi['error']:.2f}%", flush=True)
    info["error"] = 1 - torchshrink.evaluate(MeanLogits(members), data.test).accuracy
    info["arch"] = f"mean logits of {len(members)} dense LeNet-5 (seeds {list(ENSEMBLE_SEEDS)})"
    print(f"ensemble teacher error {100 * info['error']:.2f}%", flush=True)
    _teacher_settings(args, data, base, f"{name}_ensemble_teacher", members, info)


def run_wide(args: argparse.Namespace, data: Any, weights: dict[str, str]) -> None:
    """LeNet-5 settings distilled from one wider dense LeNet-5 instead of from itself."""
    name = "lenet5"
    _, base = _lenet5_dense(args, data, weights)
    teacher, info = _member(args, data, 0, width=args.wide_teacher)
    info["arch"] = f"zoo:lenet5 width={args.wide_teacher:g}, trained like the baseline (seed 0)"
    print(f"wide teacher error {100 * info['error']:.2f}% ({info['params']} params)", flush=True)
    key = f"{name}_wide_teacher_w{args.wide_teacher:g}"
    _teacher_settings(args, data, base, key, [teacher], info)


def _teacher_settings(
    args: argparse.Namespace,
    data: Any,
    base: dict[str, Any],
    key: str,
    teachers: list[Any],
    info: dict[str, Any],
) -> None:
    """Run the LeNet-5 settings from the saved dense model, distilled from ``teachers``."""
    from torchshrink.distill import Teacher

    tmp = Path(args.tmp)
    t = Teacher(teachers)  # live: the shift2 batches are new every step, nothing to cache
    _save(Path(args.out), key, base, None, None, teacher=info, distill=KD.model_dump(mode="json"))
    for setting in args.settings.split(",") if args.settings else ENSEMBLE_SETTINGS:
        dense = torchshrink.load(tmp / "lenet5_dense.safetensors")
        cfg = _config("lenet5", setting, args.threads, args.centroid_epochs, seed=args.seed)
        run_key = setting if args.seed == 0 else f"{setting}_seed{args.seed}"
        t0 = time.perf_counter()
        r = deep_compression(dense, data, config=cfg, path=tmp / f"{key}_{run_key}.ts", teacher=t)
        run = _run_record(r, base, run_key, threads=args.threads, t0=t0)
        _save(Path(args.out), key, base, run_key, run)
    print(f"wrote {args.out}")


def _baseline(
    name: str, data: Any, weights: str | None, threads: int, seed: int = 0, width: float = 1.0
) -> tuple[Any, dict]:
    torch.manual_seed(seed)
    args = {} if width == 1.0 else {"width": width}
    model = torchshrink.load_model(f"zoo:{name}", model_args=args)
    t0 = time.perf_counter()
    opts = BASELINE[name]
    how = f"lenet-mnist preset, {opts}, seed {seed}" + ("" if width == 1.0 else f", width {width}")
    if weights:
        model = torchshrink.load(Path(weights))
        how = f"weights from {weights} (trained with the {how})"
    else:
        cfg = TrainConfig.preset(
            "lenet-mnist", show_progress=False, num_threads=threads, eval_every=100, seed=seed,
            **opts,
        )  # fmt: skip
        torchshrink.train(model, data, cfg)
    acc = torchshrink.evaluate(model, data.test).accuracy
    return model, {"how": how, "error": 1 - acc, "seconds": time.perf_counter() - t0}


def _config(
    name: str,
    setting: str,
    threads: int,
    centroid_epochs: int,
    *,
    table: dict[str, dict[str, dict[str, Any]]] = SETTINGS,
    distill: DistillConfig = KD,
    seed: int = 0,
) -> DeepCompressionConfig:
    s = dict(table[name][setting])
    epochs = s.pop("epochs")
    augment = BASELINE[name].get("augment")
    ft = TrainConfig.preset(
        "finetune",
        epochs=epochs,
        lr=0.02,
        label_smoothing=0.1,
        augment=augment,
        show_progress=False,
        num_threads=threads,
        eval_every=100,
        seed=seed,
    )
    return DeepCompressionConfig(
        seed=seed,
        prune_schedule="agp",
        prune_finetune=ft,
        centroid_finetune=ft.model_copy(update={"epochs": centroid_epochs, "lr": 1e-3}),
        distill=distill,
        **s,
    )


def _run_record(r: Any, base: dict[str, Any], key: str, *, threads: int, t0: float) -> dict:
    """One run's JSON record (gap to the dense baseline, target met), its stages printed."""
    run = r.to_dict()
    run["seconds"] = time.perf_counter() - t0
    run["machine"] = machine_info(threads=threads)
    run["error_gap_points"] = 100 * (r.stages[-1].error - base["error"])
    run["meets_target"] = r.ratio >= 60 and run["error_gap_points"] <= 0.1 + 1e-9
    run["codec_version"] = CODEC_VERSION
    for s in r.stages:
        print(
            f"  {key:6s} {s.stage:9s} error {100 * s.error:5.2f}%  "
            f"nonzeros {s.nonzeros:7d}  bytes {s.file_bytes:8d}  ratio {s.ratio:6.1f}x",
            flush=True,
        )
    return run


def _save(
    out: Path,
    name: str,
    base: dict[str, Any],
    setting: str | None,
    run: dict[str, Any] | None,
    **extra: Any,
) -> None:
    # Re-read so that parallel runs of other models / settings are kept.
    record = json.loads(out.read_text()) if out.exists() else {"name": "deep_compression"}
    record.update({"data": "npz:mnist.npz", "published": PUBLISHED})
    entry = record.setdefault("models", {}).setdefault(name, {})
    entry["baseline"] = base
    entry.update(extra)
    runs = entry.setdefault("runs", {})
    if setting is not None:
        runs[setting] = run
    _write(out, record)


def _curve(entry: dict[str, Any]) -> None:
    points = []
    for k, r in entry["runs"].items():
        now = r.get("current_codec") or {}
        points.append(
            {
                "setting": k,
                "ratio": now.get("ratio", r["ratio"]),
                "codec_version": now.get("codec_version", r.get("codec_version", 1)),
                "error": r["stages"][-1]["error"],
                "error_gap_points": r["error_gap_points"],
                "meets_target": now.get("meets_target", r["meets_target"]),
            }
        )
    entry["curve"] = sorted(points, key=lambda p: p["ratio"])
    entry["target_met"] = any(p["meets_target"] for p in entry["curve"])


def _write(out: Path, record: dict[str, Any]) -> None:
    for entry in record.get("models", {}).values():
        _curve(entry)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")


def reprice(out: Path, data: Any) -> None:
    """Re-encode every recorded run's final file with the current codec (bit-exact, checked)."""
    from torchshrink.codec import save_compressed
    from torchshrink.codec.packed import CODEC_VERSION
    from torchshrink.core.modelfile import read_header

    record = json.loads(out.read_text())
    tmp = Path(tempfile.mkdtemp(prefix="dc_reprice_"))
    for name, entry in record.get("models", {}).items():
        for setting, run in entry.get("runs", {}).items():
            src = Path(run["path"])
            if not src.exists():
                print(f"{name} {setting}: {src} is gone, not re-priced", flush=True)
                continue
            model = torchshrink.load(src)
            report = save_compressed(model, tmp / f"{name}_{setting}.ts")
            back = torchshrink.load(report.path)
            exact = all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
            error = 1 - torchshrink.evaluate(back, data.test, batch_size=512).accuracy
            if not exact or abs(error - run["stages"][-1]["error"]) > 1e-9:
                raise SystemExit(f"{name} {setting}: re-encoded model differs ({error=})")
            # the original model's dense bytes (a folded model's own are fewer)
            ratio = run["stages"][-1]["dense_bytes"] / report.file_bytes
            run["current_codec"] = {
                "codec_version": CODEC_VERSION,
                "model_file_version": read_header(report.path)["version"],
                "path": str(report.path),
                "file_bytes": report.file_bytes,
                "ratio": ratio,
                "breakdown": report.breakdown(),
                "meets_target": ratio >= 60 and run["error_gap_points"] <= 0.1 + 1e-9,
            }
            print(
                f"{name} {setting}: {src.stat().st_size} -> {report.file_bytes} bytes, "
                f"{run['ratio']:.1f}x -> {ratio:.1f}x at error {100 * error:.2f}%",
                flush=True,
            )
    _write(out, record)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet300,lenet5")
    ap.add_argument("--settings", default=None, help="comma list; all of the model's if unset")
    ap.add_argument("--weights", action="append", default=[], help="name=FILE, repeatable")
    ap.add_argument("--centroid-epochs", type=int, default=3)
    ap.add_argument("--fold-dead", action="store_true", help="fold the neurons / channels left "
                    "with no weight into the next layer's bias at the end (recorded as SETTING_fold)")  # fmt: skip
    ap.add_argument("--bias-bits", type=int, default=None, help="share each layer's bias among "
                    "2**BITS values too (recorded as SETTING_bBITS)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--reprice", action="store_true", help="re-encode recorded runs, then stop")
    ap.add_argument("--teacher", nargs="?", const=TEACHER_FILE, default=None,
                    help="distill LeNet-300 from this MLP teacher (TEACHER_SETTINGS)")  # fmt: skip
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="with --teacher: skip the distilled dense reference")  # fmt: skip
    ap.add_argument("--tmp", default="/tmp/dc_teacher",
                    help="with --teacher / --ensemble-teacher: where files go")  # fmt: skip
    ap.add_argument(
        "--ensemble-teacher",
        action="store_true",
        help="distill LeNet-5 from an ensemble of 3 dense LeNet-5s (--tmp holds them)",
    )
    ap.add_argument(
        "--member",
        type=int,
        default=None,
        help="with --ensemble-teacher: only train (or find) this member, then stop",
    )
    ap.add_argument("--wide-teacher", type=float, default=None, metavar="W",
                    help="distill LeNet-5 from one dense zoo:lenet5 of this width (--tmp)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0,
                    help="prune / fine-tune seed; N > 0 records run 'SETTING_seedN'")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    weights = dict(w.split("=", 1) for w in args.weights)
    data = torchshrink.load_data(f"npz:{DATA}")
    out = Path(args.out)
    if args.reprice:
        reprice(out, data)
        return
    if args.teacher:
        run_teacher(args, data, weights)
        return
    if args.wide_teacher:
        if args.member is not None:
            print(_member(args, data, 0, width=args.wide_teacher)[1], flush=True)
            return
        run_wide(args, data, weights)
        return
    if args.ensemble_teacher:
        if args.member is not None:
            print(_member(args, data, args.member)[1], flush=True)
            return
        run_ensemble(args, data, weights)
        return
    tmp = Path(tempfile.mkdtemp(prefix="dc_bench_"))
    for name in args.models.split(","):
        model, base = _baseline(name, data, weights.get(name), args.threads)
        torchshrink.save(model, tmp / f"{name}_dense.safetensors")
        print(f"{name}: baseline error {100 * base['error']:.2f}% ({base['how']})", flush=True)
        settings = args.settings.split(",") if args.settings else list(SETTINGS[name])
        for setting in settings:
            dense = torchshrink.load(tmp / f"{name}_dense.safetensors")
            cfg = _config(name, setting, args.threads, args.centroid_epochs, seed=args.seed)
            key = setting if args.seed == 0 else f"{setting}_seed{args.seed}"
            cfg, key = _with_flags(cfg, key, args)
            t0 = time.perf_counter()
            r = deep_compression(dense, data, config=cfg, path=tmp / f"{name}_{key}.ts")
            run = _run_record(r, base, key, threads=args.threads, t0=t0)
            _save(out, name, base, key, run)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
