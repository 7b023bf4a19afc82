"""The shared study: two worker processes, exact trial counts, and resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from torchshrink.auto import run_auto
from torchshrink.auto.search import _same_params, counts, open_study, recover_stale
from torchshrink.cli.app import main


def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


@pytest.mark.integration
def test_two_workers_share_one_sqlite_study(tmp_path: Path, tiny_config) -> None:  # type: ignore[no-untyped-def]
    cfg = tiny_config(
        trials=3,
        workers=2,
        ratios=(0.25, 0.5, 0.7, 0.9),
        bits=(0, 3, 4, 5),
        search_only=True,
        data_limit=500,
        search_train_size=200,
        train={"epochs": 1, "batch_size": 64, "lr": 0.05, "show_progress": False},
    )
    res = run_auto(cfg, tmp_path)
    study = optuna.load_study(study_name=cfg.study_name, storage=f"sqlite:///{tmp_path}/study.db")
    done = _complete(study)
    assert len(done) == 3 == res.trials
    assert len({t.number for t in done}) == 3
    assert len({tuple(sorted(t.params.items())) for t in done}) == 3  # distinct candidates
    assert {"RUNNING", "WAITING"}.isdisjoint(counts(study))
    workers = {t.user_attrs["worker"] for t in done}
    assert all(":" in w for w in workers) and str(os.getpid()) not in {
        w.split(":")[1] for w in workers
    }
    assert set(res.pareto) <= {t.number for t in done} and res.run_json is None


def test_recover_stale_fails_and_requeues_running_trials(tmp_path: Path) -> None:
    study = open_study(f"sqlite:///{tmp_path}/s.db", "stale")
    t = study.ask()
    t.suggest_categorical("prune:fc1", [0.0, 0.5])
    assert recover_stale(study, all_running=False, stale_after=3600) == []  # still fresh
    assert recover_stale(study, all_running=True, stale_after=3600) == [t.number]
    c = counts(study)
    assert (c.get("FAIL"), c.get("WAITING"), c.get("RUNNING")) == (1, 1, None)
    [waiting] = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert waiting.system_attrs["fixed_params"] == {
        "prune:fc1": study.trials[0].params["prune:fc1"]
    }
    assert study.trials[t.number].user_attrs["lost"] is True


def test_a_candidate_that_failed_is_not_built_again_but_a_lost_one_is(tmp_path: Path) -> None:
    study = open_study(f"sqlite:///{tmp_path}/s.db", "fails")
    failed = study.ask()
    failed.suggest_categorical("prune:fc1", [0.0, 0.5])
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    params = dict(study.trials[failed.number].params)
    nxt = study.ask()
    assert _same_params(study, params, nxt.number) == failed.number
    other = {"prune:fc1": 0.5 if params["prune:fc1"] == 0.0 else 0.0}
    assert _same_params(study, other, nxt.number) is None
    # a trial lost to a killed run did not fail: its re-run is not a duplicate of it
    study2 = open_study(f"sqlite:///{tmp_path}/s2.db", "lost")
    lost = study2.ask()
    lost.suggest_categorical("prune:fc1", [0.0, 0.5])
    assert recover_stale(study2, all_running=True, stale_after=0) == [lost.number]
    retry = study2.ask()
    assert _same_params(study2, dict(study2.trials[lost.number].params), retry.number) is None


def _complete_in_db(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return int(
                con.execute("SELECT COUNT(*) FROM trials WHERE state='COMPLETE'").fetchone()[0]
            )
    except sqlite3.Error:  # tables not created yet
        return 0


@pytest.mark.integration
def test_killed_search_resumes_to_the_requested_trials(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "auto", "zoo:lenet300", "--data", "digits", "--out", str(out), "--trials", "3",
        "--train-epochs", "1", "--val-size", "150", "--search-train-size", "200",
        "--limit", "500", "--trial-epochs", "1", "--final-epochs", "0", "--max-accuracy-drop", "90", "--json",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchshrink", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while _complete_in_db(out / "study.db") < 1 and time.monotonic() < deadline:
            assert proc.poll() is None, "the search ended before it could be killed"
            time.sleep(0.05)
        assert _complete_in_db(out / "study.db") >= 1
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _complete_in_db(out / "study.db")
    assert 1 <= before < 3
    assert main(args) == 0
    study = optuna.load_study(
        study_name="auto-zoo-lenet300-digits-size", storage=f"sqlite:///{out}/study.db"
    )
    done = _complete(study)
    assert len(done) == 3 and len({t.number for t in done}) == 3
    assert "RUNNING" not in counts(study)
    lost = [t for t in study.trials if t.user_attrs.get("lost")]
    retried = [t for t in done if "retry_of" in t.user_attrs]
    assert len(retried) == len([t for t in lost if t.params])
    assert (out / "run.json").is_file() and (out / "model.safetensors").is_file()
