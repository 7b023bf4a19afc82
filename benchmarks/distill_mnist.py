"""Hinton et al. (2015) distillation on MNIST: 1200-1200 teacher -> 800-800 student, + ensemble.

Teacher: 784-1200-1200-10 MLP with dropout (input 0.2, hidden 0.5), trained on inputs jittered
by up to 2 pixels (``augment="shift2"``). Student: 784-800-800-10 MLP with no regularisation.
Runs, all on MNIST test errors (out of 10,000):

* the teacher;
* the student alone on clean images (Hinton's baseline: no regularisation);
* the student alone on jittered images (control: how much is the jitter alone worth?);
* the student distilled at each ``--temperatures`` value, on the same jittered batches, with
  the teacher's logits computed live on each augmented batch (so no cache);
* an ensemble of ``--ensemble-seeds`` teachers (averaged logits) distilled into one student at
  the best single-teacher temperature.

Every student gets the same epochs and optimizer. The headline number is the fraction of the
student-teacher gap closed, ``(alone - distilled) / (alone - teacher)`` (target >= 0.8). The
published figures are 146 (student alone), 74 (distilled, T=20) and 67 (teacher) after
thousands of epochs; the defaults here (6 epochs each) are what a shared 2-core machine could
run in under an hour; longer runs (e.g. ``--teacher-epochs 30``) were not tried. Teachers are kept
in ``--cache-dir`` so that ``--only-teachers`` in a second process can train the ensemble
members in parallel. The record is rewritten after every run to
``benchmarks/results/distill_mnist.json``.

Usage:
    python benchmarks/distill_mnist.py [--teacher-epochs 6] [--student-epochs 6]
        [--temperatures 20 8] [--ensemble-seeds 0 1 2] [--only-teachers]
        [--runs alone distill ensemble temperatures control] [--merge A.json B.json --out C.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from _common import machine_info
from torch import nn

import torchshrink
from torchshrink.distill import DistillConfig, Teacher, agreement, distill
from torchshrink.train import TrainConfig, train

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.npz"
OUT = Path(__file__).resolve().parent / "results" / "distill_mnist.json"
RUNS = ("alone", "distill", "ensemble", "temperatures", "control")
PUBLISHED = {"student_alone": 146, "student_distilled_T20": 74, "teacher": 67}


def mlp(hidden: int, *, dropout: bool, seed: int) -> nn.Module:
    """784-h-h-10 ReLU MLP; with ``dropout``, 0.2 on the input and 0.5 after each hidden layer."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(0.2))
    width = 784
    for _ in range(2):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(0.5))
        width = hidden
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def errors(model: nn.Module, data: torchshrink.DataBundle) -> int:
    r = torchshrink.evaluate(model, data.test)
    return round(r.error * r.n)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def get_teacher(
    seed: int, data: Any, cfg: TrainConfig, cache: Path
) -> tuple[nn.Module, float | None]:
    """A trained teacher: from ``cache`` when this seed / config was trained before."""
    model = mlp(1200, dropout=True, seed=seed)
    tag = f"{cfg.epochs}e_{cfg.lr:g}lr_{cfg.weight_decay:g}wd"
    path = cache / f"teacher_seed{seed}_{tag}.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model, None  # trained by another process; its time is in that process's log
    t0 = time.perf_counter()
    train(model, data, cfg.model_copy(update={"seed": seed}))
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)  # atomic: a parallel reader never sees half a file
    return model, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--teacher-epochs", type=int, default=6)
    ap.add_argument("--student-epochs", type=int, default=6)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[20.0, 8.0])
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--teacher-lr", type=float, default=0.1)
    ap.add_argument("--student-lr", type=float, default=0.05)
    ap.add_argument("--grad-clip", type=float, default=5.0)
    ap.add_argument("--ensemble-seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--only-teachers", action="store_true", help="train / cache teachers, exit")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/torchshrink_distill_teachers"))
    ap.add_argument("--data", default=f"npz:{MNIST}")
    ap.add_argument("--limit", type=int, default=None, help="samples per split (smoke runs)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS)
    ap.add_argument("--merge", type=Path, nargs="+", help="join these records into --out, exit")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    torch.set_num_threads(args.threads)
    data = torchshrink.load_data(args.data, limit=args.limit)
    common = {"show_progress": False, "num_threads": args.threads, "label_smoothing": 0.0}
    # Teacher: dropout + jitter + a little weight decay (standing in for Hinton's max-norm).
    t_cfg = TrainConfig.preset(
        "scratch", epochs=args.teacher_epochs, lr=args.teacher_lr, augment="shift2",
        eval_every=args.teacher_epochs, **common,
    )  # fmt: skip
    # Students: no regularisation; the same optimizer, schedule and epochs for every student.
    s_cfg = TrainConfig.preset(
        "scratch", epochs=args.student_epochs, lr=args.student_lr, weight_decay=0.0,
        grad_clip=args.grad_clip, eval_every=args.student_epochs, **common,
    )  # fmt: skip
    if args.only_teachers:
        for seed in args.ensemble_seeds:
            _, sec = get_teacher(seed, data, t_cfg, args.cache_dir)
            print(f"teacher seed {seed}: {sec} s", flush=True)
        return

    runs: list[dict[str, Any]] = []
    record = {
        "name": "distill_mnist",
        "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "teacher_train": t_cfg.model_dump(mode="json"),
                   "student_train": s_cfg.model_dump(mode="json")},
        "machine": machine_info(),
        "reference": "Hinton et al. 2015, MNIST: student 784-800-800-10 146 errors alone, 74 "
        "distilled (T=20); teacher 784-1200-1200-10 with dropout, jitter, max-norm 67",
        "published": PUBLISHED,
        "runs": runs,
    }  # fmt: skip

    def log(run: dict[str, Any]) -> None:
        runs.append(run)
        print(run, flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")

    teacher, sec = get_teacher(args.ensemble_seeds[0] if args.ensemble_seeds else 0,
                               data, t_cfg, args.cache_dir)  # fmt: skip
    t_err = errors(teacher, data)
    log({"name": "teacher 1200-1200 dropout+jitter", "test_errors": t_err,
         "params": n_params(teacher), "epochs": args.teacher_epochs, "seconds": sec})  # fmt: skip

    def student_run(name: str, augment: str | None, teachers: list[nn.Module] | None,
                    temperature: float | None, teacher_errors: int | None) -> None:  # fmt: skip
        t0 = time.perf_counter()
        s = mlp(800, dropout=False, seed=1)
        cfg = s_cfg.model_copy(update={"augment": augment})
        run: dict[str, Any] = {"name": name, "params": n_params(s), "epochs": args.student_epochs,
                               "augment": augment, "temperature": temperature,
                               "alpha": args.alpha if teachers else None}  # fmt: skip
        if teachers is None:
            train(s, data, cfg)
        else:
            dc = DistillConfig(temperature=temperature or 1.0, alpha=args.alpha, cache=False)
            t = teachers[0] if len(teachers) == 1 else Teacher(teachers)
            distill(s, t, data, dc, train_config=cfg)
            run["teacher_errors"] = teacher_errors
            run["agreement"] = agreement(s, t, data.test)
        run["test_errors"] = errors(s, data)
        run["seconds"] = time.perf_counter() - t0
        log(run)

    # Priority order (each run is saved as it ends): the Hinton comparison, then the ensemble,
    # then the extra temperatures and the jitter-only control. ``--runs`` picks a subset so a
    # second process can take some of them; ``--merge`` joins the records afterwards.
    first, *rest = args.temperatures
    if "alone" in args.runs:
        student_run("student alone (clean)", None, None, None, None)
    if "distill" in args.runs:
        student_run(f"student distilled T={first:g}", "shift2", [teacher], first, t_err)
    if "ensemble" in args.runs and len(args.ensemble_seeds) > 1:
        members = [teacher] + [
            get_teacher(s, data, t_cfg, args.cache_dir)[0] for s in args.ensemble_seeds[1:]
        ]
        for seed, m in zip(args.ensemble_seeds[1:], members[1:], strict=True):
            log({"name": f"teacher seed {seed}", "test_errors": errors(m, data)})
        e_err = errors(_Averaged(members), data)
        log({"name": f"ensemble teacher x{len(members)}", "test_errors": e_err,
             "params": sum(n_params(m) for m in members)})  # fmt: skip
        student_run(f"student distilled from ensemble T={first:g}", "shift2", members, first,
                    e_err)  # fmt: skip
    if "temperatures" in args.runs:
        for temp in rest:
            student_run(f"student distilled T={temp:g}", "shift2", [teacher], temp, t_err)
    if "control" in args.runs:
        student_run("student alone (jitter, control)", "shift2", None, None, None)
    summarize(record)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


def summarize(record: dict[str, Any]) -> None:
    """Add the gap-closed figures and the best single-teacher run to ``record`` (in place).

    Gap closed is measured against Hinton's baseline (the student alone on clean images) and
    against the control that sees the same jittered inputs without a teacher (what the teacher
    adds beyond the jitter).
    """
    by_name = {r["name"]: r["test_errors"] for r in record["runs"] if "test_errors" in r}
    alone = by_name.get("student alone (clean)")
    jit = by_name.get("student alone (jitter, control)")

    def gap(base: int | None, e: int, te: int) -> float | None:
        return (base - e) / (base - te) if base is not None and base > te else None

    for run in record["runs"]:
        if run.get("teacher_errors") is not None:
            te, e = run["teacher_errors"], run["test_errors"]
            run["gap_closed"] = gap(alone, e, te)
            run["gap_closed_vs_jittered_alone"] = gap(jit, e, te)
    single = [r for r in record["runs"] if r["name"].startswith("student distilled T=")]
    if single and alone is not None:
        best = min(single, key=lambda r: r["test_errors"])
        closed = gap(alone, best["test_errors"], best["teacher_errors"])
        same_inputs = gap(jit, best["test_errors"], best["teacher_errors"])
        # The distilled student sees jittered batches: credit the teacher only with what it adds
        # beyond the jitter, i.e. judge against the control when there is one. A teacher no
        # better than the control leaves no gap to close (None): not met.
        judged = same_inputs if jit is not None else closed
        record["best_single_teacher"] = {
            "temperature": best["temperature"], "test_errors": best["test_errors"],
            "teacher_errors": best["teacher_errors"], "student_alone_errors": alone,
            "student_alone_jitter_errors": jit, "gap_closed": closed,
            "gap_closed_vs_jittered_alone": same_inputs,
            "target_basis": "jittered control" if jit is not None else "student alone (clean)",
            "target_met": judged is not None and judged >= 0.8,
        }  # fmt: skip


def merge(paths: list[Path], out: Path) -> None:
    """Join the runs of several records of this script (first record's config) into ``out``."""
    records = [json.loads(p.read_text()) for p in paths]
    record = records[0]
    seen = {r["name"] for r in record["runs"]}
    for other in records[1:]:
        record["runs"] += [r for r in other["runs"] if r["name"] not in seen]
        seen |= {r["name"] for r in other["runs"]}
    record["merged_from"] = [{"config": r["config"], "machine": r["machine"]} for r in records]
    record["runs"] = [r for r in record["runs"] if r["name"] != "summary"]
    summarize(record)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


class _Averaged(nn.Module):
    """Mean logits of several models, for evaluating the ensemble teacher."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)  # (B, K)


if __name__ == "__main__":
    main()
