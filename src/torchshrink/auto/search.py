"""The optuna study of ``auto``: storage, worker processes, exact trial counts, resume, Pareto.

Every worker (in this process or one of ``workers`` spawned processes) runs an ask / tell
loop against the same study. Asking happens under a file lock beside the study, and a worker
asks only while ``COMPLETE + RUNNING < trials``: so the workers of one machine finish exactly
``trials`` complete trials together, never more (``study.optimize`` with
``MaxTrialsCallback`` checks only after a trial ends, so K workers can overshoot by K - 1).
Failed trials (an exception while building a candidate) do not count; a worker gives up
once ``trials`` of them have failed. A sampled candidate equal to a finished (or running) one
is told PRUNED with ``duplicate_of`` and does not count either: each complete trial is a
distinct candidate. So is one equal to a candidate that failed to build (it would fail again).

A killed search leaves RUNNING trials behind. :func:`recover_stale` marks them FAIL and
enqueues their parameters again, so the resumed search re-runs exactly those candidates. With
the default SQLite file no other process can own them (the workers of one ``auto`` run are
its children); with a shared database URL only trials older than ``stale_after`` seconds are
taken over.

Example:
    >>> front = pareto_front([(1, 0.9, 100.0), (2, 0.95, 200.0), (3, 0.9, 150.0)])
    >>> sorted(front)
    [1, 2]
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from torchshrink.auto.config import AutoConfig
from torchshrink.auto.objective import evaluate_candidate, search_data
from torchshrink.auto.settings import SearchSettings
from torchshrink.auto.space import SearchSpace
from torchshrink.core.errors import TorchshrinkError, require

LOCK_NAME = ".study.lock"


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a (spawned) worker needs; plain data so that it pickles."""

    config_json: str
    out_dir: str
    storage: str
    study_name: str
    model_path: str  # the start model: the baseline to compress, or the teacher
    index: int


def storage_url(config: SearchSettings, out_dir: Path) -> str:
    """``config.storage`` or the default ``sqlite:///<out>/study.db``."""
    return config.storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"


def open_study(url: str, name: str, *, seed: int = 0, startup: int = 10) -> Any:
    """Create or load the two-objective study (accuracy up, objective down) at ``url``.

    Example:
        >>> s = open_study("sqlite:///:memory:", "doc")
        >>> [d.name for d in s.directions]
        ['MAXIMIZE', 'MINIMIZE']
    """
    optuna: Any = require("optuna", "search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    return optuna.create_study(
        storage=url,
        study_name=name,
        directions=["maximize", "minimize"],
        sampler=sampler,
        load_if_exists=True,
    )


@contextmanager
def study_lock(out_dir: Path) -> Iterator[None]:
    """An exclusive lock shared by the workers of one output folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_NAME, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def counts(study: Any) -> dict[str, int]:
    """Trials of the study by state name (``COMPLETE``, ``RUNNING``, ``FAIL``, ``WAITING``, ...)."""
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def recover_stale(study: Any, *, all_running: bool, stale_after: float) -> list[int]:
    """Mark lost RUNNING trials FAIL and enqueue their parameters again; return their numbers."""
    optuna: Any = require("optuna", "search")
    now = datetime.now()
    lost = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        age = (now - t.datetime_start).total_seconds() if t.datetime_start else 0.0
        if not all_running and age < stale_after:
            continue
        study._storage.set_trial_user_attr(t._trial_id, "lost", True)
        study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        lost.append(t.number)
    return lost


def work(spec: WorkerSpec) -> int:
    """Run trials until the study has ``trials`` complete ones; return how many this one ran."""
    config = AutoConfig.model_validate_json(spec.config_json)
    out = Path(spec.out_dir)
    study, sdata = open_worker(config, spec.storage, spec.study_name, spec.index)
    space = SearchSpace.from_dict(study.user_attrs["space"])

    def evaluate(number: int, params: dict[str, Any]) -> Any:
        return evaluate_params(
            config, space, params, Path(spec.model_path), sdata,
            finetune=config.trial_finetune, work_dir=out / "trials" / f"{number:04d}",
        )  # fmt: skip

    return trial_loop(
        study,
        out,
        trials=config.trials,
        suggest=space.suggest,
        evaluate=evaluate,
        attrs=("file_bytes", "nonzero_params", "macs", "latency_ms", "energy_mj", "seconds"),
    )


def open_worker(
    config: SearchSettings, storage: str, study_name: str, index: int
) -> tuple[Any, Any]:
    """A worker's study and search bundle; ``config`` is an AutoConfig or a StudentConfig.

    Sets the config's torch threads, opens the study with a per-worker sampler seed, and
    carves the search bundle (:func:`~torchshrink.auto.objective.search_data`).
    """
    import torch

    import torchshrink

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    study = open_study(
        storage, study_name, seed=config.seed + 1000 * index, startup=_startup(config)
    )
    data = torchshrink.load_data(config.data, seed=config.seed, limit=config.data_limit)
    sdata = search_data(
        data, val_size=config.val_size, train_size=config.search_train_size, seed=config.seed
    )
    return study, sdata


def evaluate_params(
    config: AutoConfig,
    space: SearchSpace,
    params: dict[str, Any],
    baseline_path: Path,
    data: Any,
    *,
    finetune: Any,
    work_dir: Path,
) -> Any:
    """Build and measure the candidate ``params`` describe (``finetune``: its fine-tune)."""
    stages = space.stages(
        params, finetune=finetune, centroid_finetune=config.centroid_finetune, agp=config.agp
    )
    return evaluate_candidate(
        baseline_path,
        stages,
        data,
        objective=config.objective,
        work_dir=work_dir,
        latency_repeats=config.latency_repeats,
        distill=config.distill,
    )


def choose(
    records: list[dict[str, Any]], base_val: float, budget: float
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The smallest-objective trial within ``budget`` of ``base_val`` (ties: more accurate),
    and the most accurate trial overall (the closest when none is within budget).

    Example:
        >>> recs = [{"number": 0, "accuracy": 0.9, "objective_value": 5.0},
        ...         {"number": 1, "accuracy": 0.8, "objective_value": 1.0}]
        >>> [r["number"] if r else None for r in choose(recs, 0.91, 0.05)]
        [0, 0]
    """
    ok = [r for r in records if base_val - r["accuracy"] <= budget + 1e-12]
    chosen = min(ok, key=lambda r: (r["objective_value"], -r["accuracy"]), default=None)
    closest = max(records, key=lambda r: r["accuracy"], default=None)
    return chosen, closest


def trial_loop(
    study: Any,
    out: Path,
    *,
    trials: int,
    suggest: Callable[[Any], dict[str, Any]],
    evaluate: Callable[[int, dict[str, Any]], Any],
    attrs: tuple[str, ...],
) -> int:
    """Ask, evaluate and tell trials until ``study`` has ``trials`` complete ones.

    The one loop behind every search mode, so counts, resume and several workers behave alike:
    a trial is asked under the output folder's lock and only while ``COMPLETE + RUNNING <
    trials``; a candidate equal to one already finished, running or failed is told PRUNED;
    the loop gives up after ``trials`` real failures (or when the sampler only repeats itself).

    Args:
        study: the optuna study (two objectives: accuracy, objective value).
        out: the output folder (holds the lock).
        trials: complete trials wanted in the study.
        suggest: ``trial -> params`` (draws the candidate's choices).
        evaluate: ``(trial number, params) -> result`` with ``accuracy`` and
            ``objective_value``; an exception is a failed trial (its message is recorded).
        attrs: result attributes recorded on the trial.

    Returns:
        How many trials this call completed.
    """
    optuna: Any = require("optuna", "search")
    ran = 0
    while True:
        with study_lock(out):
            c = counts(study)
            if c.get("COMPLETE", 0) + c.get("RUNNING", 0) >= trials:
                return ran
            if c.get("FAIL", 0) - _lost(study) >= trials:
                return ran
            if c.get("PRUNED", 0) >= 3 * trials:
                return ran  # the space is (nearly) exhausted: samplers keep repeating themselves
            trial = study.ask()
            trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
            params = suggest(trial)
            twin = _same_params(study, params, trial.number)
            if twin is not None:  # nothing new to learn: not a trial of its own
                trial.set_user_attr("duplicate_of", twin)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
        try:
            res = evaluate(trial.number, params)
        except Exception as exc:  # a candidate that cannot be built is a failed trial
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        for key in attrs:
            trial.set_user_attr(key, getattr(res, key))
        study.tell(trial, [res.accuracy, res.objective_value])
        ran += 1


def _same_params(study: Any, params: dict[str, Any], number: int) -> int | None:
    # A candidate already finished, being built elsewhere, or that failed to build (the
    # caller holds the lock). A failed one is not built again: the sampler keeps proposing a
    # candidate it has no value for, and each retry fails the same way (e.g. a NaN loss).
    # A trial lost to a killed run is the exception: it did not fail, it is re-run.
    for t in study.get_trials(deepcopy=False):
        if t.number == number or t.params != params:
            continue
        if t.state.name in ("COMPLETE", "RUNNING") or (
            t.state.name == "FAIL" and not t.user_attrs.get("lost")
        ):
            return int(t.number)
    return None


def _lost(study: Any) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("lost"))


def _startup(config: SearchSettings) -> int:
    return max(2, min(10, config.trials // 2))


def run_workers(
    spec: WorkerSpec,
    workers: int,
    *,
    target: Callable[[WorkerSpec], object] = work,
    label: str = "auto",
) -> None:
    """Run ``workers`` workers (``target``: a module-level worker loop, :func:`work` or the
    student search's) on ``spec``'s study: in this process for 1, else spawned.

    Raises:
        TorchshrinkError: a worker process died (its exit code is named).
    """
    if workers == 1:
        target(spec)
        return
    spawn_workers(target, [_with_index(spec, i) for i in range(workers)], label=label)


def spawn_workers(target: Callable[[Any], object], specs: list[Any], *, label: str) -> None:
    """Run ``target(spec)`` in one spawned process per spec and wait for all of them.

    Raises:
        TorchshrinkError: a worker process died (its exit code is named).
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fork would copy torch's thread pools and locks
    procs = [
        ctx.Process(target=target, args=(spec,), name=f"{label}-worker-{i}")
        for i, spec in enumerate(specs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if bad:
        raise TorchshrinkError(
            f"{label}: worker process(es) failed: {', '.join(f'{n} exit {c}' for n, c in bad)}; "
            "run again with the same --out to resume"
        )


def _with_index(spec: WorkerSpec, index: int) -> WorkerSpec:
    return WorkerSpec(**{**spec.__dict__, "index": index})


def pareto_front(points: list[tuple[int, float, float]]) -> set[int]:
    """Numbers of the non-dominated ``(number, accuracy, objective)`` points (acc up, obj down)."""
    front = set()
    for n, acc, obj in points:
        dominated = any(
            a >= acc and o <= obj and (a > acc or o < obj) for m, a, o in points if m != n
        )
        if not dominated:
            front.add(n)
    return front


def trial_records(study: Any) -> list[dict[str, Any]]:
    """The COMPLETE trials as ``run.json`` records (``pareto`` flags the front)."""
    optuna: Any = require("optuna", "search")
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    front = pareto_front([(t.number, t.values[0], t.values[1]) for t in done])
    return [
        {
            "number": t.number,
            "accuracy": t.values[0],
            "objective_value": t.values[1],
            "pareto": t.number in front,
            "params": dict(t.params),
            **{k: v for k, v in t.user_attrs.items() if k not in ("worker",)},
        }
        for t in sorted(done, key=lambda t: t.number)
    ]
