"""The test helper's retries: only the known exit abort is retried, each from an empty folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import torchrun_helper as th

# Stands in for torchrun: aborts with the known message while a counter file says so.
FAKE = """
import sys, pathlib
out = pathlib.Path(sys.argv[1]); counter = pathlib.Path(sys.argv[2]); msg = sys.argv[3]
n = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(n + 1))
(out / f"attempt{n}").write_text("x")
if n < int(sys.argv[4]):
    sys.stderr.write(msg + "\\n"); sys.exit(134)
"""


@pytest.mark.parametrize(
    ("aborts", "rc", "runs"),
    [(0, 0, 1), (1, 0, 2), (th.RETRIES, 0, th.RETRIES + 1), (th.RETRIES + 1, 134, th.RETRIES + 1)],
)
def test_retries_the_exit_abort(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, aborts: int, rc: int, runs: int
) -> None:
    monkeypatch.setattr(th, "TORCHRUN", [sys.executable, "-c", FAKE])
    out, counter = tmp_path / "out", tmp_path / "count"
    out.mkdir()
    args = [str(out), str(counter), th.EXIT_ABORT, str(aborts)]
    if aborts:
        with pytest.warns(UserWarning, match=r"retry \d of"):
            proc = th.run_torchrun(args, out=out, timeout=60)
    else:
        proc = th.run_torchrun(args, out=out, timeout=60)
    assert proc.returncode == rc
    assert int(counter.read_text()) == runs
    assert [p.name for p in out.iterdir()] == [f"attempt{runs - 1}"]  # emptied before the retry


def test_other_failures_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(th, "TORCHRUN", [sys.executable, "-c", FAKE])
    out, counter = tmp_path / "out", tmp_path / "count"
    out.mkdir()
    proc = th.run_torchrun([str(out), str(counter), "some other error", "5"], out=out, timeout=60)
    assert proc.returncode == 134 and int(counter.read_text()) == 1
