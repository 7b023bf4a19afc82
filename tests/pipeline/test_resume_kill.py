"""A `torchshrink compress` process killed (SIGKILL) mid-run resumes from its last finished stage.

The run is a real CLI subprocess; the test waits until the runner's state file records the first
finished stage, kills the process during the second (long) stage, then resumes with `--resume`
and checks that the finished stage was not re-run and the final model evaluates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RECIPE = """
name: kill-me
model: zoo:lenet300
model_args: {input_size: 8}
data: digits
data_limit: 400
profile_repeats: 0
train: {epochs: 2, lr: 0.05, batch_size: 64, show_progress: false}
stages:
  - kind: prune
    config: {granularity: channel, ratio: 0.5}
  - kind: finetune
    train: {epochs: %d, lr: 0.001, batch_size: 16, show_progress: false}
"""


def _cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "torchshrink", *map(str, args)]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _finished_stages(state: Path) -> int:
    try:
        return len(json.loads(state.read_text())["stages"])
    except (OSError, ValueError, KeyError):
        return -1


@pytest.mark.integration
def test_killed_compress_resumes_from_last_finished_stage(tmp_path: Path) -> None:
    recipe = tmp_path / "kill-me.yaml"
    recipe.write_text(RECIPE % 60)  # the second stage takes far longer than the 20 ms poll
    out = tmp_path / "run"
    state = out / "stages" / "state.json"
    proc = subprocess.Popen(
        _cli("compress", recipe, "--out", out), env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _finished_stages(state) < 1:
            assert proc.poll() is None, f"compress ended early: {proc.stderr.read()[-2000:]!r}"
            assert time.monotonic() < deadline, "first stage did not finish within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    assert not (out / "run.json").exists() and not (out / "model.safetensors").exists()
    first_ckpt = out / "stages" / "01-prune.safetensors"
    stamp = first_ckpt.stat().st_mtime_ns
    recorded = json.loads(state.read_text())["stages"][0]

    # Resume with a shorter second stage would be another recipe (refused), so keep it as is.
    done = subprocess.run(
        _cli("compress", recipe, "--out", out, "--resume", "--json"),
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["resumed_from"] == 1
    assert first_ckpt.stat().st_mtime_ns == stamp  # the finished stage was not re-run
    run = json.loads((out / "run.json").read_text())
    assert run["stages"][0]["metrics"] == recorded["metrics"]
    assert [s["kind"] for s in run["stages"]] == ["prune", "finetune"]

    ev = subprocess.run(
        _cli("eval", out / "model.safetensors", "--data", "digits", "--json"),
        env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-2000:]
    acc = json.loads(ev.stdout)["accuracy"]
    assert acc == pytest.approx(run["final"]["accuracy"], abs=1e-9)
    assert acc > 0.5
